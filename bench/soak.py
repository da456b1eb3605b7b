"""The soak: one target at a fixed request rate, watching memory and token requests.

After a warm-up at the same rate, the resident memory of the target's processes (the
supervisor and every worker) is read from /proc, then sampled while the soak runs and
read again at the end. A leak shows as growth between the two; a token holder that
over-fetches shows as more token requests than the token lifetimes the run spanned.

Expected token requests, per worker: one at start, then one per refresh interval,
which is the lifetime less the refresh margin the bench configures (a tenth of it).
A run of 60 s with 10 s tokens therefore expects 1 + floor(60 / 9) = 7 per worker.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import asdict, dataclass

from load import LoadResult, finish_python_load, start_python_load
from processes import Children, ProcessMemory, tree_memory
from targets import (
    PROXY_WORKERS,
    BenchContext,
    backend_counters,
    refresh_margin_s,
    started,
)

SAMPLE_EVERY_S = 10.0
_POLL_S = 0.2


@dataclass(frozen=True)
class SoakSettings:
    """What to soak and how hard."""

    target: str
    workload: str
    rate_per_s: float
    seconds: float
    warmup_s: float
    connections: int


@dataclass(frozen=True)
class SoakResult:
    """Memory and token requests over one soak; RSS in KiB, summed over processes."""

    settings: SoakSettings
    workers: int
    load: LoadResult
    after_warmup: list[ProcessMemory]
    at_end: list[ProcessMemory]
    rss_kib_samples: list[int]
    token_lifetime_s: float
    refresh_interval_s: float
    seconds_since_start: float
    token_requests_whole_run: int
    token_requests_during_soak: int
    upstream_calls_during_soak: int

    @property
    def lifetimes_spanned(self) -> int:
        """Token lifetimes between the target's start and the soak's end."""
        return math.ceil(self.seconds_since_start / self.token_lifetime_s)

    @property
    def expected_token_requests(self) -> int:
        """One per worker at start, then one per refresh interval per worker."""
        refreshes = math.floor(self.seconds_since_start / self.refresh_interval_s)
        return self.workers * (1 + refreshes)

    def as_dict(self) -> dict[str, object]:
        """Everything, with the derived numbers, for JSON."""
        return {
            **asdict(self),
            "load": self.load.as_dict(),
            "rss_kib_after_warmup": _total(self.after_warmup),
            "rss_kib_at_end": _total(self.at_end),
            "lifetimes_spanned": self.lifetimes_spanned,
            "expected_token_requests": self.expected_token_requests,
        }

    def describe(self) -> str:
        """A few lines a person can read."""
        s, load = self.settings, self.load
        workers = f" ({self.workers} worker(s))" if self.workers else ""
        samples = [
            _total(self.after_warmup),
            *self.rss_kib_samples,
            _total(self.at_end),
        ]
        return "\n".join(
            [
                f"soak: {s.target}{workers}, {s.workload} at "
                f"{s.rate_per_s:g} req/s for {s.seconds:g} s after {s.warmup_s:g} s "
                "of warm-up",
                f"  load: {load.requests} requests ({load.rps:.1f}/s), p50 "
                f"{load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, non-2xx "
                f"{load.non_2xx}, errors {load.errors}",
                f"  RSS, all {len(self.at_end)} process(es): {_mib(samples[0])} after "
                f"warm-up, {_mib(samples[-1])} at the end (max sampled "
                f"{_mib(max(samples))})",
                f"  RSS by process, after warm-up -> at the end: {self._by_process()}",
                f"  token requests: {self.token_requests_whole_run} in "
                f"{self.seconds_since_start:.0f} s since start "
                f"({self.token_requests_during_soak} during the soak); lifetime "
                f"{self.token_lifetime_s:g} s, refreshed every "
                f"{self.refresh_interval_s:g} s: {self.lifetimes_spanned} lifetimes "
                f"spanned, {self.expected_token_requests} requests expected",
            ]
        )

    def _by_process(self) -> str:
        at_end = {m.pid: m.rss_kib for m in self.at_end}
        root = self.after_warmup[0].pid if self.after_warmup else None
        return ", ".join(
            f"{role(m, root)} {_mib(m.rss_kib)} -> {_mib(at_end.get(m.pid, 0))}"
            for m in self.after_warmup
        )


def role(memory: ProcessMemory, root_pid: int | None) -> str:
    """What one process of a target is, from its command line."""
    if "spawn_main" in memory.command:
        return "worker"
    if "resource_tracker" in memory.command:
        return "resource tracker"
    if memory.pid == root_pid:
        return "main"
    return memory.name


def run_soak(
    context: BenchContext, children: Children, settings: SoakSettings
) -> SoakResult:
    """Start the target, warm it up, soak it, and stop it."""
    before_start = backend_counters(context)
    started_at = time.monotonic()
    with started(settings.target, context, children) as running:
        if running.child is None:
            raise ValueError(f"{settings.target} has no process of its own to watch")
        pid = running.child.pid

        finish_python_load(
            _start_load(running.url, settings, settings.warmup_s), settings.warmup_s
        )
        after_warmup = tree_memory(pid)
        before_soak = backend_counters(context)

        soak = _start_load(running.url, settings, settings.seconds)
        samples = _sample_while_running(soak, pid)
        load = finish_python_load(soak, settings.seconds)
        at_end = tree_memory(pid)
        seconds_since_start = time.monotonic() - started_at
        during_soak = backend_counters(context) - before_soak
    whole_run = backend_counters(context) - before_start

    lifetime_s = context.token_lifetime_s
    return SoakResult(
        settings=settings,
        workers=PROXY_WORKERS.get(settings.target, 0),
        load=load,
        after_warmup=after_warmup,
        at_end=at_end,
        rss_kib_samples=[_total(sample) for sample in samples],
        token_lifetime_s=lifetime_s,
        refresh_interval_s=lifetime_s - refresh_margin_s(lifetime_s),
        seconds_since_start=seconds_since_start,
        token_requests_whole_run=whole_run.token_requests,
        token_requests_during_soak=during_soak.token_requests,
        upstream_calls_during_soak=during_soak.upstream_calls,
    )


def _start_load(
    url: str, settings: SoakSettings, duration_s: float
) -> subprocess.Popen[str]:
    return start_python_load(
        url,
        settings.workload,
        connections=settings.connections,
        duration_s=duration_s,
        rate_per_s=settings.rate_per_s,
    )


def _sample_while_running(
    process: subprocess.Popen[str], pid: int
) -> list[list[ProcessMemory]]:
    samples = []
    next_at = time.monotonic() + SAMPLE_EVERY_S
    while process.poll() is None:
        time.sleep(_POLL_S)
        if time.monotonic() >= next_at:
            samples.append(tree_memory(pid))
            next_at += SAMPLE_EVERY_S
    return samples


def _total(memory: list[ProcessMemory]) -> int:
    return sum(m.rss_kib for m in memory)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"
