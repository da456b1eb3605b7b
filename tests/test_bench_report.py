"""The bench table's ``vs pass`` column: per-round pairs, not a ratio of medians."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The bench's modules import each other by their bare names, as scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from load import LoadResult
from report import Measurement, summarise


def _run(target: str, round_number: int, rps: int) -> Measurement:
    result = LoadResult(
        requests=rps, non_2xx=0, errors=0, duration_s=1.0, p50_ms=1.0, p99_ms=2.0
    )
    return Measurement(target, "get", 64, round_number, result, 0, rps)


def test_ratio_pairs_each_round_with_the_pass_through_of_the_same_round() -> None:
    """The median of the per-round ratios, which the machine's speed cancels from.

    Paired, the proxy is at 0.8, 0.9 and 0.95 of the pass-through, so 0.9; the
    ratio of the two medians (5,700 over 6,000) would say 0.95.
    """
    runs = [
        _run("passthrough", 1, 10_000),
        _run("proxy", 1, 8_000),
        _run("passthrough", 2, 4_000),
        _run("proxy", 2, 3_600),
        _run("passthrough", 3, 6_000),
        _run("proxy", 3, 5_700),
    ]

    rows = {row.target: row for row in summarise(runs)}

    assert rows["proxy"].ratio_to_passthrough == pytest.approx(0.9)
    assert rows["passthrough"].ratio_to_passthrough == pytest.approx(1.0)
    assert rows["proxy"].rps == 5_700


def test_a_round_without_a_pass_through_run_is_left_out_of_the_ratio() -> None:
    runs = [
        _run("passthrough", 1, 10_000),
        _run("proxy", 1, 8_000),
        _run("proxy", 2, 1_000),
    ]

    [_, proxy] = summarise(runs)

    assert proxy.ratio_to_passthrough == pytest.approx(0.8)
