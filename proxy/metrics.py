"""Prometheus metrics, correct with one worker or many.

Each worker counts into its own registry. With ``--workers`` the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a directory before the workers start, prometheus
client keeps values in files there, and whichever worker answers ``/metrics``
aggregates them all: counters and histograms add up, in-flight gauges sum over live
workers, and a token's expiry is the soonest any worker holds.

Seconds until a token expires are derived at scrape time from that expiry
timestamp, so they are right however long ago a worker last refreshed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.call_metrics import CallMetrics, CallTally, SharedCallMetrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The proxy's metrics; one instance per worker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.per_call: CallMetrics
        if os.environ.get(MULTIPROC_ENV):
            self.per_call = SharedCallMetrics(registry, _DURATION_BUCKETS)
        else:
            tally = CallTally(_DURATION_BUCKETS)
            registry.register(tally)
            self.per_call = tally
        self.replays = Counter(
            "inventory_proxy_replays",
            "Calls replayed with a fresh token after an upstream's 401.",
            ["upstream"],
            registry=registry,
        )
        self.token_requests = Counter(
            "inventory_proxy_token_requests",
            "Token requests sent, by source and outcome (ok or failed).",
            ["source", "outcome"],
            registry=registry,
        )
        self.refresh_duration = Histogram(
            "inventory_proxy_token_refresh_duration_seconds",
            "How long token requests took, by source.",
            ["source"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.token_expiry = Gauge(
            "inventory_proxy_token_expiry_timestamp_seconds",
            "When the current token of a source expires (Unix time; the soonest "
            "across workers).",
            ["source"],
            registry=registry,
            multiprocess_mode="min",
        )
        self.waiting = Gauge(
            "inventory_proxy_calls_waiting_on_refresh",
            "Calls waiting for a token request to finish, by source.",
            ["source"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.budget_left = Gauge(
            "inventory_proxy_token_budget_remaining",
            "Token requests left in the current hour's budget, by source.",
            ["source"],
            registry=registry,
            multiprocess_mode="min",
        )

    def token_fetched(
        self,
        source: str,
        *,
        ok: bool,
        duration_s: float,
        expires_at: float | None,
        budget_left: int | None,
    ) -> None:
        self.token_requests.labels(source, "ok" if ok else "failed").inc()
        self.refresh_duration.labels(source).observe(duration_s)
        if expires_at is not None:
            self.token_expiry.labels(source).set(expires_at)
        if budget_left is not None:
            self.budget_left.labels(source).set(budget_left)

    def waiting_on_refresh(self, source: str, change: int) -> None:
        self.waiting.labels(source).inc(change)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every worker's metrics, and its content type."""
        registry = self.registry
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            registry = CollectorRegistry()
            # prometheus_client leaves this constructor untyped.
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        derived = CollectorRegistry()
        derived.register(_ExpiresIn(registry))
        return generate_latest(registry) + generate_latest(derived), CONTENT_TYPE_LATEST


class _ExpiresIn(Collector):
    """Seconds until each source's token expires, from the expiry timestamps."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "inventory_proxy_token_expires_in_seconds",
            "Seconds until the current token of a source expires.",
            labels=["source"],
        )
        now = time.time()
        for metric in self._source.collect():
            if metric.name != "inventory_proxy_token_expiry_timestamp_seconds":
                continue
            for sample in metric.samples:
                family.add_metric([sample.labels["source"]], sample.value - now)
        yield family
