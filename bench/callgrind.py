"""Work per request, counted by callgrind instead of timed.

    .venv/bin/python bench/callgrind.py --target proxy
    .venv/bin/python bench/callgrind.py --target passthrough --cache-sim
    .venv/bin/python bench/callgrind.py --cache-sim --rate 30 --python-path /tmp/variant

On a shared machine a rate moves by tens of percent from one minute to the next;
what a process executes per request hardly moves. This starts the backend and one
target with the target under valgrind's callgrind, loads it, and counts one span
of that load: the counters are zeroed and, seconds later, dumped
(``callgrind_control``) while the load goes on, then divided by the calls the
backend received in between. ``--python-path`` measures an edited copy of
``proxy/`` (a feature taken out, say) without installing it; ``--rate`` holds a
fixed pace, because under full load the count per request moves with the rate the
target reaches, and two variants are only comparable at the same one.

Instructions undercount interpreted code: the interpreter's jumps miss the branch
predictor and its code misses the instruction cache more often than C code does.
``--cache-sim`` has callgrind simulate both, and adds an estimate of cycles per
request: instructions, plus 10 per first-level cache miss, 100 per last-level miss
and 15 per mispredicted branch, within the ranges the cachegrind manual gives.

Needs valgrind (``apt-get install valgrind``). Under it the target runs about 50
times slower, so a run takes a minute or two, and the load generator is never the
limit. It is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backend import IBM_TOKEN_LIFETIME_S
from load import LoadResult, finish_python_load, start_python_load
from processes import Children
from targets import RunningTarget, backend_counters, start_backend, started
from workloads import WORKLOADS, requests_for
from wrk import run_wrk, write_script, wrk_path

TARGETS = ("passthrough", "passthrough-pool", "proxy")
# Under valgrind the proxy takes tens of seconds to import its dependencies.
STARTUP_TIMEOUT_S = 300.0
# The load outlasts the dump, and gets this long to finish after it.
_LOAD_AFTER_DUMP_S = 2.0
_LOAD_GRACE_S = 60.0
L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100
MISPREDICT_CYCLES = 15
_TOOLS = ("valgrind", "callgrind_control")

Load = Callable[[RunningTarget, float], LoadResult]


@dataclass(frozen=True)
class Counts:
    """Callgrind's events for one dump, per forwarded request."""

    requests: int
    per_request: Mapping[str, float]

    @property
    def estimated_cycles(self) -> float | None:
        """Instructions plus the cost of misses, when the caches were simulated."""
        events = self.per_request
        if "I1mr" not in events:
            return None
        first_level = events["I1mr"] + events["D1mr"] + events["D1mw"]
        last_level = events["ILmr"] + events["DLmr"] + events["DLmw"]
        mispredicted = events.get("Bcm", 0.0) + events.get("Bim", 0.0)
        return (
            events["Ir"]
            + L1_MISS_CYCLES * first_level
            + LL_MISS_CYCLES * last_level
            + MISPREDICT_CYCLES * mispredicted
        )


def read_counts(dump: Path, requests: int) -> Counts:
    """Per-request events from a dump's ``events`` and ``summary`` lines.

    The summary is the dump's whole cost, the figure ``callgrind_annotate`` calls
    the program totals.
    """
    names: list[str] = []
    summary: list[int] = []
    for line in dump.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key == "events":
            names = value.split()
        elif key == "summary":
            summary = [int(field) for field in value.split()]
    if not names or len(summary) != len(names):
        raise ValueError(f"{dump} has no events and summary lines that match")
    if requests <= 0:
        raise ValueError("no request reached the upstream in the counted span")
    totals = zip(names, summary, strict=True)
    return Counts(requests, {name: total / requests for name, total in totals})


def format_counts(target: str, workload: str, counts: Counts) -> str:
    """One line a person can compare between runs, in thousands per request."""
    events = counts.per_request
    text = (
        f"{target} {workload}: {counts.requests} requests, "
        f"{events['Ir'] / 1000:.0f}k instructions/request"
    )
    cycles = counts.estimated_cycles
    if cycles is not None:
        misses = ", ".join(
            f"{name} {events[name] / 1000:.1f}k"
            for name in ("I1mr", "D1mr", "D1mw", "Bcm", "Bim")
            if name in events
        )
        text += f" ({misses}), about {cycles / 1000:.0f}k cycles/request"
    return text


def measure(args: argparse.Namespace, work_dir: Path) -> Counts:
    """Start the backend and the target under callgrind; count one loaded span.

    The load runs without a break from before the counters are zeroed until after
    they are dumped, so calls in flight at either end are cut alike; the span's
    requests are the upstream calls the backend saw in it, one per forwarded call.
    """
    dump_base = work_dir / "callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump_base}"]
    if args.cache_sim:
        wrapper += ["--cache-sim=yes", "--branch-sim=yes"]
    with Children(work_dir) as children:
        context = start_backend(
            children, work_dir, token_lifetime_s=IBM_TOKEN_LIFETIME_S, nginx_workers=1
        )
        with (
            started(
                args.target,
                context,
                children,
                wrapper=wrapper,
                python_path=args.python_path,
                startup_timeout_s=STARTUP_TIMEOUT_S,
            ) as target,
            ThreadPoolExecutor(max_workers=1) as background,
        ):
            assert target.child is not None
            pid = str(target.child.pid)
            load_s = args.warmup + args.duration + _LOAD_AFTER_DUMP_S
            load = background.submit(_loader(args, work_dir), target, load_s)
            time.sleep(args.warmup)
            before = backend_counters(context)
            _control("--zero", pid)
            time.sleep(args.duration)
            _control("--dump", pid)
            after = backend_counters(context)
            load.result(timeout=load_s + _LOAD_GRACE_S)
    # The first dump after start is numbered 1; the one at exit has no number.
    requests = (after - before).upstream_calls
    return read_counts(Path(f"{dump_base}.1"), requests)


def _loader(args: argparse.Namespace, work_dir: Path) -> Load:
    if args.rate is not None or args.load_generator == "python" or wrk_path() is None:

        def python_load(target: RunningTarget, duration_s: float) -> LoadResult:
            process = start_python_load(
                target.url,
                args.workload,
                connections=args.connections,
                duration_s=duration_s,
                rate_per_s=args.rate,
            )
            return finish_python_load(process, duration_s)

        return python_load

    script = write_script(requests_for(args.workload), work_dir / "load.lua", {})

    def wrk_load(target: RunningTarget, duration_s: float) -> LoadResult:
        return run_wrk(
            target.url, script, connections=args.connections, duration_s=duration_s
        )

    return wrk_load


def _control(option: str, pid: str) -> None:
    tool = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run(  # noqa: S603 - valgrind's own tool, our child's pid
        [tool, option, pid],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=TARGETS, default="proxy")
    parser.add_argument("--workload", choices=WORKLOADS, default="get")
    parser.add_argument("--connections", type=int, default=64, help="(%(default)s)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds counted (%(default)g)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds before (%(default)g)"
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="simulate caches and branches too, and estimate cycles (slower)",
    )
    parser.add_argument(
        "--python-path", help="import proxy from here first (an edited copy)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="requests per second, fixed (bench/load.py), to compare variants "
        "at the same pace: at full load the count moves with the rate",
    )
    parser.add_argument(
        "--load-generator",
        choices=("auto", "python"),
        default="auto",
        help="auto: wrk when installed (%(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Count one target's work per request and print it."""
    args = _parser().parse_args(argv)
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)}: apt-get install valgrind", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inventory-proxy-callgrind-") as work:
        counts = measure(args, Path(work))
    print(format_counts(args.target, args.workload, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
