"""Benchmark inventory-proxy against the upstream, a bare pass-through and nginx.

    .venv/bin/python bench/run.py              # the default run, a few minutes
    .venv/bin/python bench/run.py --quick      # a smoke run, seconds per target
    .venv/bin/python bench/run.py --soak 300   # memory and tokens at a fixed rate

Everything listens on 127.0.0.1 on free ports: a backend process (the upstream and
its token endpoint, ``backend.py``), then every target, each under the same load in
turn. Each workload goes to one target after the other, seconds apart, in an order
that reverses every round, so that machine noise hits them alike; the table gives
the median per target, and each target's rate over the pass-through's in the same
round. wrk drives the load when installed, else ``load.py``. Results go to stdout
and to ``bench/results/<timestamp>.json`` with the machine's details.

It is a benchmark, not a test: it asserts nothing about speed. Every process it
starts is stopped when it ends, whatever way it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backend import IBM_TOKEN_LIFETIME_S
from load import LoadResult, run_python_load
from processes import Children, tree_cpu_s
from report import (
    Measurement,
    format_table,
    machine_info,
    measurement_dict,
    row_dict,
    summarise,
    write_json,
)
from soak import SoakSettings, run_soak
from targets import (
    CONTROLS,
    ONLY_WORKLOADS,
    TARGETS,
    BenchContext,
    RunningTarget,
    backend_counters,
    skip_reason,
    start_backend,
    started,
)
from workloads import WORKLOADS, requests_for
from wrk import run_wrk, write_script, wrk_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SOAK_TOKEN_LIFETIME_S = 10.0
SETTLE_S = 0.2
"""Calls still in flight when wrk stops reach the backend within this; count them."""


@dataclass(frozen=True)
class Settings:
    """One bench run's choices, after ``--quick`` and the defaults are applied."""

    targets: tuple[str, ...]
    workloads: tuple[str, ...]
    concurrency: tuple[int, ...]
    hot_concurrency: int
    duration_s: float
    warmup_s: float
    rounds: int
    token_lifetime_s: float
    load_generator: str
    nginx_workers: int
    results_dir: Path

    def plan(self, target: str) -> list[tuple[str, int]]:
        """The (workload, concurrency) runs for ``target``, in order."""
        allowed = ONLY_WORKLOADS.get(target, frozenset(WORKLOADS))
        return [
            (workload, concurrency)
            for workload in self.workloads
            if workload in allowed
            for concurrency in (
                (self.hot_concurrency,) if workload == "hot" else self.concurrency
            )
        ]


Measure = Callable[[RunningTarget, str, int, float], LoadResult]
"""Load a target with a workload over so many connections for so many seconds."""


@dataclass(frozen=True)
class Profile:
    """Defaults that ``--quick`` changes; explicit options win over both."""

    duration_s: float
    warmup_s: float
    rounds: int
    concurrency: str


_NORMAL = Profile(duration_s=3.0, warmup_s=1.0, rounds=3, concurrency="8,64")
_QUICK = Profile(duration_s=1.0, warmup_s=0.5, rounds=1, concurrency="8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench or the soak; 0 on success, 2 on bad options."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        parser.error(str(exc))

    started_at = datetime.now(UTC)
    # Read before the run: the proxy's working tree may change while it lasts.
    machine = machine_info(load_generator=settings.load_generator)
    with (
        tempfile.TemporaryDirectory(prefix="inventory-proxy-bench-") as work,
        Children(Path(work)) as children,
    ):
        context = start_backend(
            children,
            Path(work),
            token_lifetime_s=settings.token_lifetime_s,
            nginx_workers=settings.nginx_workers,
        )
        if args.soak is not None:
            soak = run_soak(context, children, _soak_settings(args))
            text, ran = soak.describe(), [soak.settings.target]
            body: dict[str, object] = {
                "settings": {"token_lifetime_s": settings.token_lifetime_s},
                "soak": soak.as_dict(),
            }
        else:
            text, body, ran = _run_matrix(settings, context, children)

    command = argv if argv is not None else sys.argv[1:]
    payload: dict[str, object] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": ["bench/run.py", *command],
        **body,
        "machine": {**machine, "nginx": machine["nginx"] if "nginx" in ran else None},
    }
    path = settings.results_dir / f"{started_at:%Y%m%dT%H%M%SZ}.json"
    write_json(path, payload)
    print(text)
    print(f"\nresults: {path}")
    return 0


def _run_matrix(
    settings: Settings, context: BenchContext, children: Children
) -> tuple[str, dict[str, object], list[str]]:
    """Run every round; returns the table, the JSON body and the targets that ran."""
    skipped = {
        name: reason
        for name in settings.targets
        if (reason := skip_reason(name, context)) is not None
    }
    for name in settings.targets:
        if name not in skipped and not settings.plan(name):
            skipped[name] = "runs only the hot workload, which was not selected"
    active = [name for name in settings.targets if name not in skipped]

    measurements = _measure_rounds(settings, active, context, children)
    rows = summarise(measurements)
    order = {name: index for index, name in enumerate(settings.targets)}
    rows.sort(
        key=lambda r: (WORKLOADS.index(r.workload), r.concurrency, order[r.target])
    )

    text = format_table(rows)
    for name, reason in skipped.items():
        text += f"\nskipped {name}: {reason}"
    body: dict[str, object] = {
        "settings": _jsonable(settings),
        "rows": [row_dict(row) for row in rows],
        "runs": [measurement_dict(m) for m in measurements],
        "skipped": skipped,
    }
    return text, body, active


def _measure_rounds(
    settings: Settings,
    active: Sequence[str],
    context: BenchContext,
    children: Children,
) -> list[Measurement]:
    """Every target runs each workload in turn, a few seconds apart, every round.

    All targets are started and warmed up first; an idle one costs nothing. Each
    workload then goes to one target after another, so that what the machine is
    doing at the time (another VM on the host, say) falls on neighbouring runs of
    different targets alike. The order reverses every other round, so that no
    target is always the one that comes first or last.
    """
    runner = _Runner(settings, context, _measurer(settings, context.work_dir))
    plans = {name: settings.plan(name) for name in active}
    runs: list[tuple[str, int]] = []
    for plan in plans.values():
        runs += [run for run in plan if run not in runs]
    measurements = []
    with contextlib.ExitStack() as stack:
        running = {
            name: stack.enter_context(started(name, context, children))
            for name in active
        }
        for name, target in running.items():
            warmup_concurrency = max(c for _, c in plans[name])
            runner.load(target, "mix", warmup_concurrency, settings.warmup_s)
        for round_number in range(1, settings.rounds + 1):
            order = active if round_number % 2 else list(reversed(active))
            for workload, concurrency in runs:
                for name in order:
                    if (workload, concurrency) not in plans[name]:
                        continue
                    measurement = runner.measure(
                        running[name], workload, concurrency, round_number
                    )
                    measurements.append(measurement)
                    _progress(settings.rounds, measurement)
    return measurements


@dataclass(frozen=True)
class _Runner:
    """Measures one run: the load, and the backend's counters and CPU around it."""

    settings: Settings
    context: BenchContext
    load: Measure

    def measure(
        self, target: RunningTarget, workload: str, concurrency: int, round_number: int
    ) -> Measurement:
        before = backend_counters(self.context)
        cpu_before = _cpu_s(target)
        result = self.load(target, workload, concurrency, self.settings.duration_s)
        cpu_after = _cpu_s(target)
        time.sleep(SETTLE_S)
        spent = backend_counters(self.context) - before
        return Measurement(
            target.name,
            workload,
            concurrency,
            round_number,
            result,
            spent.token_requests,
            spent.upstream_calls,
            _spent(cpu_before, cpu_after),
        )


def _cpu_s(target: RunningTarget) -> float | None:
    # The direct target is the backend, whose CPU is not the target's own.
    return tree_cpu_s(target.child.pid) if target.child is not None else None


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _measurer(settings: Settings, work_dir: Path) -> Measure:
    if settings.load_generator == "python":

        def measure_python(
            target: RunningTarget, workload: str, connections: int, duration_s: float
        ) -> LoadResult:
            return run_python_load(
                target.url,
                workload,
                connections=connections,
                duration_s=duration_s,
                authorization=target.authorization,
            )

        return measure_python

    scripts: dict[tuple[str, str | None], Path] = {}

    def measure_wrk(
        target: RunningTarget, workload: str, connections: int, duration_s: float
    ) -> LoadResult:
        key = (workload, target.authorization)
        if key not in scripts:
            headers = {"Authorization": key[1]} if key[1] else {}
            path = work_dir / f"{workload}-{len(scripts)}.lua"
            scripts[key] = write_script(requests_for(workload), path, headers)
        return run_wrk(
            target.url, scripts[key], connections=connections, duration_s=duration_s
        )

    return measure_wrk


def _progress(rounds: int, m: Measurement) -> None:
    r = m.result
    print(
        f"[round {m.round}/{rounds}] {m.target:<16} {m.workload:<4} "
        f"c={m.concurrency:<3} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
        f"p99 {r.p99_ms:7.2f} ms  non-2xx {r.non_2xx}  errors {r.errors}  "
        f"tokens {m.token_requests}",
        file=sys.stderr,
        flush=True,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 round of 1 s per run, concurrency 8",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated, from: %(default)s",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated, from: %(default)s",
    )
    parser.add_argument(
        "--concurrency",
        help=f"connections, comma-separated ({_NORMAL.concurrency}; "
        f"--quick: {_QUICK.concurrency})",
    )
    parser.add_argument(
        "--hot-concurrency",
        type=positive_int,
        default=64,
        help="connections for the hot workload (%(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=positive_number,
        help=f"seconds per run ({_NORMAL.duration_s:g}; "
        f"--quick: {_QUICK.duration_s:g}; wrk rounds up)",
    )
    parser.add_argument(
        "--warmup",
        type=positive_number,
        help="seconds of mixed load after each target starts "
        f"({_NORMAL.warmup_s:g}; --quick: {_QUICK.warmup_s:g})",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        help=f"rounds over all targets ({_NORMAL.rounds}; --quick: {_QUICK.rounds})",
    )
    parser.add_argument(
        "--token-lifetime-s",
        type=positive_number,
        help=f"lifetime of the proxy's tokens ({IBM_TOKEN_LIFETIME_S:g},"
        f" as IBM's; --soak: {SOAK_TOKEN_LIFETIME_S:g})",
    )
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed (%(default)s)",
    )
    parser.add_argument(
        "--nginx-workers",
        type=positive_int,
        default=1,
        help="nginx worker_processes (%(default)s)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON goes (bench/results)",
    )

    soak = parser.add_argument_group("soak")
    soak.add_argument(
        "--soak",
        type=positive_number,
        metavar="SECONDS",
        help="soak one target at a fixed rate instead of the table",
    )
    soak.add_argument(
        "--soak-target",
        default="proxy",
        choices=[t for t in TARGETS if t != "direct" and t not in CONTROLS],
        help="(%(default)s)",
    )
    soak.add_argument(
        "--rate",
        type=positive_number,
        default=500.0,
        help="requests per second (%(default)g)",
    )
    soak.add_argument(
        "--soak-workload", choices=WORKLOADS, default="mix", help="(%(default)s)"
    )
    soak.add_argument(
        "--soak-warmup",
        type=positive_number,
        default=10.0,
        help="seconds before the first memory reading (%(default)g)",
    )
    soak.add_argument(
        "--soak-connections", type=positive_int, default=16, help="(%(default)s)"
    )
    return parser


_EPILOG = """\
targets:
  direct        the backend itself, with a fixed valid bearer token
  passthrough   bench/passthrough.py: bare aiohttp forwarding, fixed token (the floor)
  passthrough-pool  the same over the proxy's UpstreamPool, past aiohttp's public API
  proxy         inventory-proxy serve, 1 worker, info logging to a file
  control       a second pass-through: its vs pass is the noise floor of that column
  proxy-2w      inventory-proxy serve --workers 2
  nginx         nginx with a fixed Authorization and a keep-alive upstream pool
  proxy-shared  1 worker with share_identical and cache_ttl_s = 1; hot workload only

workloads:
  get   GET /inventory/T/v1/items/{id} over 1,000 SKUs
  post  POST /inventory/T/v1/availability/network, 5 lines per cart
  mix   4 GETs to 1 POST
  hot   single-line availability for 4 best sellers (--hot-concurrency)
"""


def _settings(args: argparse.Namespace) -> Settings:
    profile = _QUICK if args.quick else _NORMAL
    targets = _names(args.targets, TARGETS, "target")
    workloads = _names(args.workloads, WORKLOADS, "workload")
    concurrency = tuple(
        positive_int(c) for c in (args.concurrency or profile.concurrency).split(",")
    )

    generator = args.load_generator
    if args.soak is not None:
        generator = "python"  # wrk cannot hold a fixed rate
    elif generator == "auto":
        generator = "wrk" if wrk_path() else "python"
    if generator == "wrk" and not wrk_path():
        raise ValueError("--load-generator wrk: wrk is not installed")

    lifetime = args.token_lifetime_s
    if lifetime is None:
        lifetime = (
            SOAK_TOKEN_LIFETIME_S if args.soak is not None else IBM_TOKEN_LIFETIME_S
        )
    return Settings(
        targets=targets,
        workloads=workloads,
        concurrency=concurrency,
        hot_concurrency=args.hot_concurrency,
        duration_s=args.duration if args.duration is not None else profile.duration_s,
        warmup_s=args.warmup if args.warmup is not None else profile.warmup_s,
        rounds=args.rounds if args.rounds is not None else profile.rounds,
        token_lifetime_s=lifetime,
        load_generator=generator,
        nginx_workers=args.nginx_workers,
        results_dir=args.results_dir,
    )


def _soak_settings(args: argparse.Namespace) -> SoakSettings:
    return SoakSettings(
        target=args.soak_target,
        workload=args.soak_workload,
        rate_per_s=args.rate,
        seconds=args.soak,
        warmup_s=args.soak_warmup,
        connections=args.soak_connections,
    )


def _names(listed: str, known: Sequence[str], kind: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in listed.split(",") if name.strip())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown {kind}(s) {unknown}; choose from {', '.join(known)}")
    return names


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive whole number")
    return value


def positive_number(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text} is not a positive number")
    return value


def _jsonable(settings: Settings) -> dict[str, object]:
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(settings).items()
    }


if __name__ == "__main__":
    sys.exit(main())
