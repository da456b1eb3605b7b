"""Driving wrk: a Lua script per workload, and its summary read back as JSON.

The script holds the workload's pool (from ``workloads``) as requests formatted once
per wrk thread, cycles through them, and prints one ``BENCH_JSON`` line from wrk's
``done`` hook. wrk counts answers with a status of 400 or more as errors; the bench
reports those as ``non_2xx`` (the backend answers no 1xx or 3xx), and socket errors
(connect, read, write, timeout) as ``errors``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from load import LoadResult
from workloads import BenchRequest

MARKER = "BENCH_JSON "
MAX_THREADS = 2
_TIMEOUT_MARGIN_S = 30.0

_SCRIPT = """\
local specs = {
%(specs)s
}
local extra_headers = {%(headers)s}
local pool = {}
local index = 0

function init(args)
  for i, spec in ipairs(specs) do
    local headers = {}
    for name, value in pairs(extra_headers) do headers[name] = value end
    if spec[3] ~= "" then headers["Content-Type"] = "application/json" end
    pool[i] = wrk.format(spec[1], spec[2], headers, spec[3] ~= "" and spec[3] or nil)
  end
end

function request()
  index = index %% #pool + 1
  return pool[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%(marker)s{\\"requests\\":%%d,\\"duration_us\\":%%d,\\"status_errors\\":%%d," ..
    "\\"socket_errors\\":%%d,\\"p50_us\\":%%d,\\"p99_us\\":%%d}\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    """Where wrk is installed, if it is."""
    return shutil.which("wrk")


def write_script(
    pool: Sequence[BenchRequest], path: Path, headers: Mapping[str, str]
) -> Path:
    """Write the Lua script that sends ``pool`` round-robin; returns ``path``.

    ``headers`` go on every request, besides the Content-Type of a body.
    """
    specs = ",\n".join(
        f"  {{{_lua(r.method)}, {_lua(r.path)}, {_lua(r.body.decode())}}}" for r in pool
    )
    extra = ", ".join(
        f"[{_lua(name)}] = {_lua(value)}" for name, value in headers.items()
    )
    script = _SCRIPT % {"specs": specs, "headers": extra, "marker": MARKER}
    path.write_text(script, encoding="utf-8")
    return path


def run_wrk(
    base_url: str, script: Path, *, connections: int, duration_s: float
) -> LoadResult:
    """Run wrk against ``base_url`` and return its summary."""
    executable = wrk_path()
    if executable is None:
        raise RuntimeError("wrk is not installed; use --load-generator python")
    seconds = max(1, math.ceil(duration_s))
    argv = [
        executable,
        f"--threads={min(MAX_THREADS, connections)}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={script}",
        base_url,
    ]
    finished = subprocess.run(  # noqa: S603 - argv built here, no shell
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + _TIMEOUT_MARGIN_S,
        check=True,
    )
    return parse_summary(finished.stdout)


def parse_summary(output: str) -> LoadResult:
    """Read the ``BENCH_JSON`` line the script's ``done`` hook printed."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            summary = json.loads(line.removeprefix(MARKER))
            return LoadResult(
                requests=summary["requests"],
                non_2xx=summary["status_errors"],
                errors=summary["socket_errors"],
                duration_s=summary["duration_us"] / 1e6,
                p50_ms=summary["p50_us"] / 1000,
                p99_ms=summary["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary line:\n{output}")


def _lua(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
