"""Child processes of the bench: start, wait until they answer, stop, measure RSS.

Every child starts in a session of its own, so that its process group id is its own
pid: stopping sends SIGTERM to the child, waits a bounded time, then SIGKILLs that
group, which also takes down workers a supervisor left behind. ``Children`` stops
whatever is still running when its ``with`` block ends, however it ends. Nothing here
signals a process the bench did not start.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

STOP_GRACE_S = 10.0
_POLL_S = 0.05
_LOG_TAIL_BYTES = 2000


class ChildFailed(RuntimeError):
    """A child exited or never answered; the message carries its log's tail."""


@dataclass
class Child:
    """One started process and the file its stdout and stderr go to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's pid, also its process group id."""
        return self.process.pid

    def log_tail(self) -> str:
        """The end of the child's output, for error messages."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(max(0, self.log_path.stat().st_size - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
        return ""


class Children:
    """The processes started in one ``with`` block, all stopped when it ends."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._running: list[Child] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for child in reversed(self._running):
            self.stop(child)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Child:
        """Start ``argv`` with its output in ``<log_dir>/<name>.log``."""
        log_path = self._log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - argv built by the bench, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self._running.append(child)
        return child

    def stop(self, child: Child, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL to the child's group after ``grace_s``."""
        if child.process.poll() is None:
            child.process.terminate()
            try:
                child.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                _kill_group(child.pid)
                child.process.wait(grace_s)
        _kill_group(child.pid)  # workers the child may have left behind
        if child in self._running:
            self._running.remove(child)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` without any proxy settings."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def get_json(port: int, path: str) -> dict[str, int]:
    """GET a JSON object, raising unless the answer is 200."""
    status, body = http_get(port, path)
    if status != 200:
        raise ChildFailed(f"GET {path} on port {port} answered {status}")
    answer: dict[str, int] = json.loads(body)
    return answer


def wait_until_ok(child: Child | None, port: int, path: str, timeout_s: float) -> None:
    """Poll ``path`` until it answers 200; fail fast if ``child`` exits."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise ChildFailed(
                f"{child.name} exited with {child.process.returncode}:\n"
                f"{child.log_tail()}"
            )
        try:
            status, _ = http_get(port, path, timeout_s=1.0)
        except OSError as exc:
            last_error = str(exc)
        else:
            if status == 200:
                return
            last_error = f"status {status}"
        time.sleep(_POLL_S)
    tail = child.log_tail() if child is not None else ""
    raise ChildFailed(f"port {port} {path}: {last_error} after {timeout_s}s\n{tail}")


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one process, from /proc/<pid>/status, and its command."""

    pid: int
    name: str
    rss_kib: int
    command: str


def tree_memory(root_pid: int) -> list[ProcessMemory]:
    """VmRSS of ``root_pid`` and all its descendants (Linux /proc only)."""
    return [memory for pid in _tree(root_pid) if (memory := _memory(pid)) is not None]


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user and system) used so far by ``root_pid`` and its descendants.

    Unlike a rate, this barely moves with what else the machine is doing, so the
    CPU each request costs compares targets even on a noisy machine.
    """
    ticks = 0
    for pid in _tree(root_pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree(root_pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])

    tree = [root_pid]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name, which may hold spaces: field 3 on."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _memory(pid: int) -> ProcessMemory | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = values.get("VmRSS", "0 kB").split()[0]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        command = b""
    return ProcessMemory(
        pid, values.get("Name", "?").strip(), int(rss), command.decode().strip()
    )
