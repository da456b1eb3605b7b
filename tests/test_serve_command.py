"""`inventory-proxy serve` as a process: starts from a file, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import CLIENT_ID, CLIENT_SECRET, RecordingUpstream, sample

STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(STARTUP_TIMEOUT_S):
        while True:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


def write_config(
    directory: Path, port: int, idp_server: TestServer, upstream: TestServer
) -> Path:
    """A config for the fixtures' provider and upstream, its secret from ${VAR}."""
    config = directory / "proxy.toml"
    config.write_text(
        f"""
[server]
port = {port}

[token_sources.iv]
token_url = "{idp_server.make_url("/oauth2/token")}"
client_id = "{CLIENT_ID}"
client_secret = "${{IV_CLIENT_SECRET}}"

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "{upstream.make_url("/inventory")}"
token_source = "iv"
""",
        encoding="utf-8",
    )
    return config


async def test_serve_reads_config_from_the_environment_and_stops_on_sigterm(
    tmp_path: Path,
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """INVENTORY_PROXY_CONFIG names the file; SIGTERM drains and exits 0."""
    port = free_port()
    config = write_config(tmp_path, port, idp_server, upstream[1])
    env = {
        **os.environ,
        "INVENTORY_PROXY_CONFIG": str(config),
        "IV_CLIENT_SECRET": CLIENT_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/inventory/T/v1/availability/network",
                json={"lines": []},
            ) as response,
        ):
            status = response.status

        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    events = [json.loads(line)["event"] for line in out.decode().splitlines()]
    assert status == 200
    assert process.returncode == 0
    assert events[0] == "proxy.started"
    assert "request.completed" in events
    assert events[-1] == "proxy.stopped"
    assert upstream[0].calls[0].authorized
    assert CLIENT_SECRET not in out.decode() + err.decode()
    assert idp.token_requests == 1


async def test_workers_share_the_port_and_stop_together(
    tmp_path: Path,
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """--workers 2: two processes, one token holder each, one SIGTERM stops both."""
    port = free_port()
    config = write_config(tmp_path, port, idp_server, upstream[1])
    env = {**os.environ, "IV_CLIENT_SECRET": CLIENT_SECRET}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--config",
        str(config),
        "--workers",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    early: list[bytes] = []
    try:
        assert process.stdout is not None
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while sum(b'"proxy.started"' in line for line in early) < 2:
                early.append(await process.stdout.readline())
        await wait_until_healthy(f"http://127.0.0.1:{port}")
        # A connection per request, so the kernel may hand each to either worker.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(20):
                async with session.get(
                    f"http://127.0.0.1:{port}/inventory/items/1"
                ) as response:
                    assert response.status == 200
            scrapes = []
            for _ in range(6):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    scrapes.append(await response.text())

        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    lines = b"".join(early).decode().splitlines() + out.decode().splitlines()
    events = [json.loads(line)["event"] for line in lines if line]
    assert process.returncode == 0, err.decode()
    assert events.count("proxy.started") == 2
    assert events.count("proxy.stopped") == 2
    assert events.count("request.completed") == 26
    assert idp.token_requests == 2
    # Whichever worker answers a scrape, it counts the calls of both.
    for text in scrapes:
        calls = sample(text, "inventory_proxy_calls_total", upstream="inventory")
        tokens = sample(text, "inventory_proxy_token_requests_total", source="iv")
        assert (calls, tokens) == (20, 2)
