"""The metrics every call touches, counted at the cost of a few integer additions.

Calls in flight, calls answered (by upstream, method and status class) and their
durations (a histogram by upstream) change on every call, so prometheus_client's
metric objects, with a lock and several method calls per update, cost more than
the rest of a call's own bookkeeping. ``CallTally`` keeps them as plain integers,
safe because one event loop runs a worker, and a collector turns them into the
same families at scrape time.

With ``--workers`` every worker's counts must reach whichever worker answers the
scrape, which prometheus_client does through its multiprocess files; there
``SharedCallMetrics`` updates its metric objects on each call, as usual.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

CALLS = "inventory_proxy_calls"
CALLS_DOC = "Calls answered, by upstream, method and status class."
DURATION = "inventory_proxy_call_duration_seconds"
DURATION_DOC = "Time from a call's arrival to its answer, by upstream."
IN_FLIGHT = "inventory_proxy_calls_in_flight"
IN_FLIGHT_DOC = "Calls being handled now."


class CallMetrics(Protocol):
    """What the call boundary reports: a call began, ended, and was answered."""

    def started(self) -> None: ...

    def finished(self) -> None: ...

    def answered(
        self, upstream: str | None, method: str, status: int, duration_s: float
    ) -> None: ...


def _shown(method: str) -> str:
    # Bounded: unknown methods share "OTHER", so label sets stay few.
    return method if method in KNOWN_METHODS else "OTHER"


class _Durations:
    __slots__ = ("counts", "total_s")

    def __init__(self, bucket_count: int) -> None:
        # One count per bucket bound, and a last one for +Inf; not cumulative.
        self.counts = [0] * (bucket_count + 1)
        self.total_s = 0.0


class CallTally(Collector):
    """The per-call metrics of one process, as integers, collected when scraped."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(buckets)
        self._bucket_names = [repr(float(bound)) for bound in self._bounds] + ["+Inf"]
        self.in_flight = 0
        self._calls: dict[tuple[str | None, str, int], list[float]] = {}
        self._durations: dict[str | None, _Durations] = {}

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight -= 1

    def answered(
        self, upstream: str | None, method: str, status: int, duration_s: float
    ) -> None:
        key = (upstream, _shown(method), status // 100)
        entry = self._calls.get(key)
        if entry is None:
            entry = self._calls[key] = [0, time.time()]
        entry[0] += 1
        durations = self._durations.get(upstream)
        if durations is None:
            durations = self._durations[upstream] = _Durations(len(self._bounds))
        durations.counts[bisect_left(self._bounds, duration_s)] += 1
        durations.total_s += duration_s

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            CALLS, CALLS_DOC, labels=["upstream", "method", "status_class"]
        )
        for (upstream, method, status_class), (count, created) in self._calls.items():
            labels = [upstream or "none", method, f"{status_class}xx"]
            calls.add_metric(labels, count, created=created)
        yield calls

        durations = HistogramMetricFamily(DURATION, DURATION_DOC, labels=["upstream"])
        for upstream, tally in self._durations.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for name, in_bucket in zip(self._bucket_names, tally.counts, strict=True):
                cumulative += in_bucket
                buckets.append((name, cumulative))
            durations.add_metric([upstream or "none"], buckets, tally.total_s)
        yield durations

        yield GaugeMetricFamily(IN_FLIGHT, IN_FLIGHT_DOC, value=self.in_flight)


class SharedCallMetrics:
    """The per-call metrics as prometheus_client objects, for multiprocess mode."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.calls = Counter(
            CALLS,
            CALLS_DOC,
            ["upstream", "method", "status_class"],
            registry=registry,
        )
        self.durations = Histogram(
            DURATION, DURATION_DOC, ["upstream"], buckets=buckets, registry=registry
        )
        self.in_flight = Gauge(
            IN_FLIGHT, IN_FLIGHT_DOC, registry=registry, multiprocess_mode="livesum"
        )
        # Label lookups take a lock each; the children of a call's labels are kept.
        self._children: dict[tuple[str | None, str, int], tuple[Any, Any]] = {}

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self) -> None:
        self.in_flight.dec()

    def answered(
        self, upstream: str | None, method: str, status: int, duration_s: float
    ) -> None:
        key = (upstream, _shown(method), status // 100)
        children = self._children.get(key)
        if children is None:
            name = upstream or "none"
            children = (
                self.calls.labels(name, key[1], f"{key[2]}xx"),
                self.durations.labels(name),
            )
            self._children[key] = children
        calls, durations = children
        calls.inc()
        durations.observe(duration_s)
