"""The per-call metrics: the cheap tally exposes what prometheus_client would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from proxy.call_metrics import CallMetrics, CallTally, SharedCallMetrics
from tests.conftest import sample

BUCKETS = (0.005, 0.01, 0.1, 1.0)
CALLS = [
    ("inventory", "GET", 200, 0.004),
    ("inventory", "GET", 200, 0.005),  # on a bound: counted in that bucket
    ("inventory", "GET", 204, 0.0101),
    ("inventory", "POST", 503, 2.0),  # past every bound: +Inf only
    ("inventory", "BREW", 405, 0.001),  # an unknown method is "OTHER"
    ("inventory", "MKCOL", 405, 0.001),
    (None, "GET", 404, 0.0),  # no route: upstream "none"
]


def exposition(metrics: CallMetrics, registry: CollectorRegistry) -> set[str]:
    metrics.started()
    metrics.started()
    metrics.finished()
    for call in CALLS:
        metrics.answered(*call)
    lines = generate_latest(registry).decode().splitlines()
    return {line for line in lines if line and "_created" not in line}


def test_tally_exposes_the_same_samples_as_prometheus_objects() -> None:
    """Every calls, duration and in-flight sample is what prometheus_client gives."""
    tally_registry = CollectorRegistry()
    tally = CallTally(BUCKETS)
    tally_registry.register(tally)
    shared_registry = CollectorRegistry()
    shared = SharedCallMetrics(shared_registry, BUCKETS)

    assert exposition(tally, tally_registry) == exposition(shared, shared_registry)


def test_tally_counts_by_label_and_bucket() -> None:
    """Counts land on the right labels and buckets, bounds included."""
    registry = CollectorRegistry()
    tally = CallTally(BUCKETS)
    registry.register(tally)

    text = "\n".join(exposition(tally, registry))

    calls = "inventory_proxy_calls_total"
    assert sample(text, calls, upstream="inventory", method="GET") == 3
    assert sample(text, calls, method="OTHER", status_class="4xx") == 2
    assert sample(text, calls, upstream="none", status_class="4xx") == 1
    bucket = "inventory_proxy_call_duration_seconds_bucket"
    assert sample(text, bucket, upstream="inventory", le="0.005") == 4
    assert sample(text, bucket, upstream="inventory", le="1.0") == 5
    assert sample(text, bucket, upstream="inventory", le="+Inf") == 6
    assert sample(text, "inventory_proxy_calls_in_flight") == 1
