"""bench/run.py end to end in its quick mode: a smoke test, with no timing in it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"
TARGETS = ("direct", "passthrough", "passthrough-pool", "proxy", "control")
WORKLOADS = ("get", "post", "hot")
HOT_CONCURRENCY = 64
QUICK_CONCURRENCY = 8


@pytest.mark.timeout(300)
def test_quick_bench_answers_every_request_and_writes_a_row_per_run(
    tmp_path: Path,
) -> None:
    """Upstream, pass-through and proxy each answer every request with a 2xx."""
    argv = [sys.executable, str(RUN), "--quick", "--load-generator", "python"]
    argv += ["--targets", ",".join(TARGETS), "--workloads", ",".join(WORKLOADS)]
    argv += ["--results-dir", str(tmp_path)]

    finished = subprocess.run(  # noqa: S603 - our own script, no shell
        argv, capture_output=True, text=True, timeout=240, check=False
    )

    assert finished.returncode == 0, finished.stderr
    [results] = tmp_path.glob("*.json")
    rows = json.loads(results.read_text(encoding="utf-8"))["rows"]
    measured = {(row["target"], row["workload"], row["concurrency"]) for row in rows}
    assert measured == {
        (target, workload, HOT_CONCURRENCY if workload == "hot" else QUICK_CONCURRENCY)
        for target in TARGETS
        for workload in WORKLOADS
    }
    for row in rows:
        assert row["requests"] > 0, row
        assert row["non_2xx"] == 0, row
        assert row["errors"] == 0, row
