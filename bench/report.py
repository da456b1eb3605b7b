"""Turning measured runs into the table and the JSON file, with the machine they ran on.

Each (target, workload, concurrency) gets one row. Rates and latencies are the median
over the rounds, so that one noisy round does not move them; counts (non-2xx, socket
errors, token requests, requests, upstream calls) are totals over the rounds, so that
a single failure anywhere shows. ``vs pass`` is the median, over the rounds, of a
row's rate divided by the pass-through's in the same round for the same workload and
concurrency. The pairs cancel what changes more slowly than the seconds between their
two runs, not what changes faster. ``spread`` is the range of the rates over the
rounds as a share of the median, to tell a difference from noise.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from load import LoadResult

BASELINE = "passthrough"


@dataclass(frozen=True)
class Measurement:
    """One load run against one target, with the backend's counters around it."""

    target: str
    workload: str
    concurrency: int
    round: int
    result: LoadResult
    token_requests: int
    upstream_calls: int
    cpu_s: float | None = None
    """CPU the target's processes used during the run; None for ``direct``."""

    @property
    def cpu_us_per_request(self) -> float | None:
        """The target's CPU per request answered, in microseconds."""
        if self.cpu_s is None or not self.result.requests:
            return None
        return self.cpu_s * 1e6 / self.result.requests


@dataclass
class Row:
    """The summary of one target, workload and concurrency over all rounds."""

    target: str
    workload: str
    concurrency: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    token_requests: int
    requests: int
    upstream_calls: int
    rounds: int
    cpu_us_per_request: float | None = None
    ratio_to_passthrough: float | None = None

    @property
    def rps_spread(self) -> float:
        """The rates' range over the rounds as a share of their median: the noise."""
        return (self.rps_max - self.rps_min) / self.rps if self.rps else 0.0

    @property
    def upstream_calls_saved(self) -> int:
        """Requests answered without an upstream call (cache or shared flight).

        wrk drops the requests in flight when its time is up, so for a target that
        saves nothing this is a small negative number, at most the concurrency.
        """
        return self.requests - self.upstream_calls


def summarise(measurements: list[Measurement]) -> list[Row]:
    """One row per target, workload and concurrency, in the order first measured."""
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.target, m.workload, m.concurrency), []).append(m)

    rows = [_row(key, runs) for key, runs in groups.items()]
    baseline_rps = {
        (m.workload, m.concurrency, m.round): m.result.rps
        for m in measurements
        if m.target == BASELINE
    }
    for row in rows:
        ratios = [
            m.result.rps / baseline
            for m in groups[(row.target, row.workload, row.concurrency)]
            if (baseline := baseline_rps.get((m.workload, m.concurrency, m.round)))
        ]
        if ratios:
            row.ratio_to_passthrough = statistics.median(ratios)
    return rows


def _row(key: tuple[str, str, int], runs: list[Measurement]) -> Row:
    target, workload, concurrency = key
    return Row(
        target=target,
        workload=workload,
        concurrency=concurrency,
        rps=statistics.median(m.result.rps for m in runs),
        rps_min=min(m.result.rps for m in runs),
        rps_max=max(m.result.rps for m in runs),
        p50_ms=statistics.median(m.result.p50_ms for m in runs),
        p99_ms=statistics.median(m.result.p99_ms for m in runs),
        non_2xx=sum(m.result.non_2xx for m in runs),
        errors=sum(m.result.errors for m in runs),
        token_requests=sum(m.token_requests for m in runs),
        requests=sum(m.result.requests for m in runs),
        upstream_calls=sum(m.upstream_calls for m in runs),
        rounds=len(runs),
        cpu_us_per_request=_median_or_none(m.cpu_us_per_request for m in runs),
    )


def _median_or_none(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


_COLUMNS = (
    ("target", 16, "<"),
    ("workload", 8, "<"),
    ("conc", 4, ">"),
    ("req/s", 8, ">"),
    ("spread", 6, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 7, ">"),
    ("non-2xx", 7, ">"),
    ("errors", 6, ">"),
    ("tokens", 6, ">"),
    ("upstr/req", 9, ">"),
    ("cpu us/req", 10, ">"),
    ("vs pass", 7, ">"),
)


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table, one line per row."""
    lines = [_line([title for title, _, _ in _COLUMNS])]
    lines.append(_line(["-" * width for _, width, _ in _COLUMNS]))
    for row in rows:
        upstream_share = row.upstream_calls / row.requests if row.requests else 0.0
        ratio = row.ratio_to_passthrough
        lines.append(
            _line(
                [
                    row.target,
                    row.workload,
                    str(row.concurrency),
                    f"{row.rps:.0f}",
                    f"{row.rps_spread:.0%}",
                    f"{row.p50_ms:.2f}",
                    f"{row.p99_ms:.2f}",
                    str(row.non_2xx),
                    str(row.errors),
                    str(row.token_requests),
                    f"{upstream_share:.2f}",
                    _shown(row.cpu_us_per_request, ".0f"),
                    _shown(ratio, ".2f"),
                ]
            )
        )
    return "\n".join(lines)


def _shown(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _line(cells: list[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}"
        for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def row_dict(row: Row) -> dict[str, object]:
    """A row for the JSON file, with the calls saved."""
    return {
        **asdict(row),
        "rps_spread": row.rps_spread,
        "upstream_calls_saved": row.upstream_calls_saved,
    }


def measurement_dict(m: Measurement) -> dict[str, object]:
    """One run for the JSON file, flat."""
    return {
        "target": m.target,
        "workload": m.workload,
        "concurrency": m.concurrency,
        "round": m.round,
        **m.result.as_dict(),
        "token_requests": m.token_requests,
        "upstream_calls": m.upstream_calls,
        "cpu_s": m.cpu_s,
    }


def machine_info(*, load_generator: str) -> dict[str, object]:
    """What the numbers depend on: hardware, versions, and which tools ran."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "uvloop": _version("uvloop"),
        "load_generator": load_generator,
        "wrk": _tool_version(["wrk", "--version"]) if load_generator == "wrk" else None,
        "nginx": _tool_version(["nginx", "-v"]),
        "proxy_commit": _tool_version(["git", "describe", "--always", "--dirty"]),
    }


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Write ``payload`` to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _proc_field(path: str, name: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _tool_version(argv: list[str]) -> str | None:
    executable = shutil.which(argv[0])
    if executable is None:
        return None
    try:
        finished = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [executable, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = (finished.stdout or finished.stderr).strip()
    return output.splitlines()[0] if output else None
