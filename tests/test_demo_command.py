"""``inventory-proxy demo`` as a newcomer runs it: a real process, its curl lines."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator

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
