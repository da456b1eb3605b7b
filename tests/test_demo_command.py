"""``inventory-proxy demo`` as a newcomer runs it: a real process, its curl lines."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

STARTUP_TIMEOUT_S = 20.0
CURL_TIMEOUT_S = 20.0


@pytest.fixture
async def demo() -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """The demo on an ephemeral port, with the lines it printed up to its prompt."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "demo",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not lines or lines[-1] != "Ctrl-C stops the demo.":
                raw = await process.stdout.readline()
                assert raw, f"demo exited early: {lines}"
                lines.append(raw.decode().rstrip("\n"))
        yield process, lines
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")
async def test_demo_curl_lines_work_as_printed(
    demo: tuple[asyncio.subprocess.Process, list[str]],
) -> None:
    """Every printed curl line, pasted into a shell, gets a 2xx JSON answer."""
    _, lines = demo
    curls = [line for line in lines if line.startswith("curl ")]

    answers = []
    for line in curls:
        argv = [*shlex.split(line), "--fail", "--max-time", "10"]
        curl = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(curl.communicate(), CURL_TIMEOUT_S)
        assert curl.returncode == 0, (line, err.decode())
        answers.append(json.loads(out))

    assert len(curls) == 6
    stand_in, availability, reservation, delivery, prices, ready = answers
    assert stand_in["access_token"].startswith("stand-in.")
    [line_answer] = availability["lines"]
    assert line_answer["networkAvailabilities"][0]["totalAvailableQuantity"] >= 0
    assert reservation["lines"][0]["reservationId"]
    assert delivery
    assert prices
    assert ready == {"status": "ready", "token_sources": ["iv", "pricing"]}


async def test_demo_stops_cleanly_on_ctrl_c(
    demo: tuple[asyncio.subprocess.Process, list[str]],
) -> None:
    """SIGINT ends both proxy and backend with exit code 0 and no traceback."""
    process, lines = demo
    assert re.search(r"proxy on http://127\.0\.0\.1:\d+", "\n".join(lines))

    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT_S)

    assert process.returncode == 0
    assert b"Traceback" not in err
    assert b"inventory-proxy demo: stopped" in err


async def test_demo_backend_runs_alone_with_credentials_from_the_environment(
    tmp_path: Path,
) -> None:
    """demo-backend + serve --config config/demo.toml: the two-process demo works."""
    env = {
        **os.environ,
        "DEMO_IV_CLIENT_ID": "oms-iv",
        "DEMO_IV_CLIENT_SECRET": "iv-secret-0123456789abcdef",
        "DEMO_PRICING_CLIENT_ID": "oms-pricing",
        "DEMO_PRICING_CLIENT_SECRET": "pricing-secret-0123456789",
        "DEMO_TENANT": "demo-tenant",
    }
    backend_port, proxy_port = free_port(), free_port()
    env["DEMO_BACKEND"] = f"http://127.0.0.1:{backend_port}"
    config = Path(__file__).parent.parent / "config" / "demo.toml"
    local = tmp_path / "demo.toml"
    local.write_text(config.read_text().replace("port = 8080", f"port = {proxy_port}"))
    backend = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "demo-backend",
        "--port",
        str(backend_port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    proxy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--config",
        str(local),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await wait_for_ready(f"http://127.0.0.1:{proxy_port}/readyz")
    finally:
        for process in (proxy, backend):
            process.send_signal(signal.SIGTERM)
        for process in (proxy, backend):
            await asyncio.wait_for(process.wait(), STARTUP_TIMEOUT_S)

    assert ready == {"status": "ready", "token_sources": ["iv", "pricing"]}
    assert proxy.returncode == backend.returncode == 0


async def wait_for_ready(url: str) -> object:
    """Poll /readyz until it answers 200 (bounded)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(STARTUP_TIMEOUT_S):
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return await response.json()
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
