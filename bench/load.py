"""The Python load generator: N keep-alive connections for a fixed time or rate.

The bench uses it when wrk is missing or ``--load-generator python`` asks for it, and
always for the soak, since wrk cannot hold a fixed rate. Each connection sends one
request at a time from the workload's pool and records its latency, from the moment
it was sent to the last byte of the answer. With ``--rate`` request ``i`` is due at
``start + i / rate``; a connection that falls behind sends late rather than skipping.

One process and one event loop: on a small machine it saturates long before wrk
does, so it understates fast targets. Run as a script it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from workloads import WORKLOADS, BenchRequest, requests_for

from proxy.server import new_event_loop

REQUEST_TIMEOUT_S = 10.0
AUTHORIZATION_ENV = "BENCH_AUTHORIZATION"
_EXIT_MARGIN_S = 60.0


@dataclass
class LoadResult:
    """One load run, whichever generator produced it; latencies in milliseconds."""

    requests: int
    non_2xx: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second over the run."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        """The result with its rate, for JSON."""
        return {**asdict(self), "rps": self.rps}


@dataclass
class _Recorder:
    latencies_s: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0


async def generate(
    base_url: str,
    pool: Sequence[BenchRequest],
    *,
    connections: int,
    duration_s: float,
    rate_per_s: float | None = None,
    authorization: str | None = None,
) -> LoadResult:
    """Send the pool's requests round-robin for ``duration_s`` and measure them.

    ``authorization``, when given, goes on every request (the direct target).
    """
    recorder = _Recorder()
    indexes = itertools.count()
    session = aiohttp.ClientSession(
        base_url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        headers={"Authorization": authorization} if authorization else None,
    )
    started = time.perf_counter()
    deadline = started + duration_s

    async def connection() -> None:
        for index in indexes:
            now = time.perf_counter()
            if rate_per_s is not None:
                due = started + index / rate_per_s
                if due >= deadline:
                    return
                await asyncio.sleep(max(0.0, due - now))
            elif now >= deadline:
                return
            await _send(session, pool[index % len(pool)], recorder)

    async with session, asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(connection())
    elapsed_s = time.perf_counter() - started

    latencies = sorted(recorder.latencies_s)
    return LoadResult(
        requests=len(latencies),
        non_2xx=recorder.non_2xx,
        errors=recorder.errors,
        duration_s=elapsed_s,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )


async def _send(
    session: aiohttp.ClientSession, request: BenchRequest, recorder: _Recorder
) -> None:
    sent = time.perf_counter()
    try:
        async with session.request(
            request.method,
            request.path,
            data=request.body or None,
            headers=request.headers,
        ) as answer:
            await answer.read()
    except (aiohttp.ClientError, TimeoutError):
        recorder.errors += 1
        return

    recorder.latencies_s.append(time.perf_counter() - sent)
    if not 200 <= answer.status < 300:
        recorder.non_2xx += 1


def start_python_load(
    url: str,
    workload: str,
    *,
    connections: int,
    duration_s: float,
    rate_per_s: float | None = None,
    authorization: str | None = None,
) -> subprocess.Popen[str]:
    """Start this module as a process of its own; ``finish_python_load`` reads it.

    ``authorization`` travels in the environment, not on the command line.
    """
    argv = [sys.executable, str(Path(__file__).resolve()), "--url", url]
    argv += ["--workload", workload, "--connections", str(connections)]
    argv += ["--duration-s", str(duration_s)]
    if rate_per_s is not None:
        argv += ["--rate", str(rate_per_s)]
    env = {**os.environ, AUTHORIZATION_ENV: authorization or ""}
    return subprocess.Popen(  # noqa: S603 - argv built here, no shell
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish_python_load(process: subprocess.Popen[str], duration_s: float) -> LoadResult:
    """Wait for a load process (killing it past a bound) and parse its result."""
    try:
        out, err = process.communicate(timeout=duration_s + _EXIT_MARGIN_S)
    except BaseException:  # a timeout or Ctrl-C: leave no generator behind
        process.kill()
        process.communicate()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode}):\n{err}")
    summary = json.loads(out)
    summary.pop("rps")
    return LoadResult(**summary)


def run_python_load(
    url: str,
    workload: str,
    *,
    connections: int,
    duration_s: float,
    authorization: str | None = None,
) -> LoadResult:
    """One closed-loop run, in a process of its own as wrk's would be."""
    process = start_python_load(
        url,
        workload,
        connections=connections,
        duration_s=duration_s,
        authorization=authorization,
    )
    return finish_python_load(process, duration_s)


def percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> None:
    """Run one load and print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--rate", type=float, help="requests per second (open loop)")
    args = parser.parse_args()

    loop = new_event_loop()
    try:
        result = loop.run_until_complete(
            generate(
                args.url,
                requests_for(args.workload),
                connections=args.connections,
                duration_s=args.duration_s,
                rate_per_s=args.rate,
                authorization=os.environ.get(AUTHORIZATION_ENV) or None,
            )
        )
    finally:
        loop.close()
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
