"""bench/callgrind.py: what it reads from a dump, and one real run under valgrind."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The bench's modules import each other by their bare names, as scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from callgrind import format_counts, read_counts

BENCH = Path(__file__).resolve().parent.parent / "bench"

_DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
fl=(1) loop.c
fn=(1) run
16 1 2 3 4 5 6 7 8 9 10 11 12 13
summary: 2000000 400000 200000 20000 10000 4000 0 2 0 100000 8000 20000 6000
totals: 2100000 400000 200000 20000 10000 4000 0 2 0 100000 8000 40000 6000
"""


def test_counts_come_from_the_summary_and_are_per_request(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text(_DUMP, encoding="utf-8")

    counts = read_counts(dump, requests=4)

    assert counts.per_request["Ir"] == 500_000
    assert counts.per_request["Bim"] == 1_500
    # 500k + 10 x (5k + 2.5k + 1k) + 100 x 0.5 + 15 x (2k + 1.5k)
    assert counts.estimated_cycles == pytest.approx(637_550)
    assert format_counts("proxy", "get", counts).startswith(
        "proxy get: 4 requests, 500k instructions/request (I1mr 5.0k"
    )


def test_without_cache_simulation_there_is_no_cycle_estimate(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("events: Ir\nsummary: 900000\n", encoding="utf-8")

    counts = read_counts(dump, requests=3)

    assert counts.estimated_cycles is None
    assert format_counts("passthrough", "post", counts) == (
        "passthrough post: 3 requests, 300k instructions/request"
    )


@pytest.mark.parametrize(
    ("text", "requests", "message"),
    [
        ("events: Ir Dr\nsummary: 10\n", 1, "no events and summary lines that match"),
        ("summary: 10\n", 1, "no events and summary lines that match"),
        ("events: Ir\nsummary: 10\n", 0, "no request reached the upstream"),
    ],
)
def test_a_dump_that_cannot_be_read_says_why(
    tmp_path: Path, text: str, requests: int, message: str
) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text(text, encoding="utf-8")

    with pytest.raises(ValueError, match=message):
        read_counts(dump, requests)


@pytest.mark.timeout(240)
@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="needs valgrind (apt-get install valgrind)"
)
def test_a_short_run_counts_the_pass_through_per_request() -> None:
    argv = [sys.executable, str(BENCH / "callgrind.py"), "--target", "passthrough"]
    argv += ["--duration", "1", "--warmup", "0.5", "--connections", "2"]
    argv += ["--rate", "20"]

    finished = subprocess.run(  # noqa: S603 - our own script, no shell
        argv, capture_output=True, text=True, timeout=200, check=False
    )

    assert finished.returncode == 0, finished.stderr
    shown = re.fullmatch(
        r"passthrough get: (\d+) requests, (\d+)k instructions/request\n",
        finished.stdout,
    )
    assert shown is not None, finished.stdout
    requests, thousands = (int(group) for group in shown.groups())
    assert requests > 0
    # A forwarded GET executes hundreds of thousands of instructions; a count
    # far outside that means the dump covered the wrong span.
    assert 100 <= thousands <= 5_000
