"""A real ``redis-server`` for the tests: started on a free loopback port, stopped
by its own handle, killable and restartable on the same port, pausable (SIGSTOP)
to play a Redis that hangs. Also a Sentinel watching it, and a one-node Cluster.

A module imports the fixtures ``redis_server_fixture`` (one server per session) and
``redis_fixture`` (the same server, emptied and running, per test). Only processes
started here are ever signalled.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")
MISSING = (
    "redis-server is not installed (Debian: apt-get install -y redis-server); "
    "the shared token store is tested against a real Redis only"
)
_START_WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 55000)  # noqa: S311 - not crypto
        try:
            with socket.socket() as first, socket.socket() as bus:
                first.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


@dataclass
class RedisServer:
    """One ``redis-server`` process, without persistence, on 127.0.0.1."""

    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None, MISSING
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary, our arguments
            argv + self.extra_args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_until_answering()
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop at once, as a crash would: no goodbye to connected clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server: connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_WAIT_S
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def start_sentinel(workdir: Path, master: RedisServer, name: str) -> RedisServer:
    """A Sentinel that watches ``master`` under ``name``."""
    config = workdir / "sentinel.conf"
    config.write_text(
        f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n", encoding="utf-8"
    )
    sentinel = RedisServer(workdir)
    assert REDIS_SERVER is not None, MISSING
    argv = [REDIS_SERVER, str(config), "--sentinel", "--port", str(sentinel.port)]
    argv += ["--bind", "127.0.0.1", "--dir", str(workdir)]
    sentinel.process = subprocess.Popen(  # noqa: S603 - a fixed binary
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sentinel.wait_until_answering()
        deadline = time.monotonic() + _START_WAIT_S
        with sentinel.client() as client:
            ask = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
            while not client.execute_command(*ask):
                assert time.monotonic() < deadline, "the sentinel never found it"
                time.sleep(0.05)
    except BaseException:
        sentinel.kill()
        raise
    return sentinel


def start_cluster_node(workdir: Path) -> RedisServer:
    """A Redis Cluster of one node that owns every hash slot."""
    node = RedisServer(
        workdir,
        port=free_cluster_port(),
        extra_args=[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(workdir / "nodes.conf"),
        ],
    )
    node.start()
    try:
        deadline = time.monotonic() + _START_WAIT_S
        with node.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "the cluster never became ready"
                time.sleep(0.05)
    except BaseException:
        node.kill()
        raise
    return node


@pytest.fixture(name="redis_server", scope="session")
def redis_server_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(name="redis")
def redis_fixture(redis_server: RedisServer) -> RedisServer:
    """The session's Redis, running and empty."""
    redis_server.ensure_running()
    with redis_server.client() as client:
        client.flushall()
    return redis_server
