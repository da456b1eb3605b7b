"""What each workload sends, shared by the Python load generator and the wrk script.

A workload is a fixed pool of requests that every connection cycles through, built
once from a seeded random generator so that every target, round and load generator
sees the same bytes:

- ``get``: item lookups, ``GET /inventory/T/v1/items/{itemId}``, over a catalog of
  1,000 SKUs.
- ``post``: network availability for a cart of five lines (the shape in
  /work/shared/UPSTREAMS.md), items drawn from the same catalog.
- ``mix``: four lookups to one availability call (80/20).
- ``hot``: single-line availability for a handful of best sellers, so that identical
  requests are in flight at the same moment; it is the workload for the proxy's
  request sharing and micro-cache.

The pool is cycled, so a body repeats every ``POOL_SIZE`` requests: fine for a pass-
through, but a cache in front of the upstream would hit on ``post`` too, which is why
``proxy-shared`` only runs ``hot``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

TENANT = "bench-tenant"
WORKLOADS = ("get", "post", "mix", "hot")
POOL_SIZE = 1000
CATALOG_SIZE = 1000
LINES_PER_CART = 5
HOT_ITEMS = ("SKU-1024", "SKU-2048", "SKU-4096", "SKU-8192")
MIX_POST_EVERY = 5
_SEED = 20261203


@dataclass(frozen=True)
class BenchRequest:
    """One request of a workload: the path is relative to the target's base URL."""

    method: str
    path: str
    body: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        """The headers the request needs beyond what the client adds itself."""
        return {"Content-Type": "application/json"} if self.body else {}


def requests_for(workload: str) -> list[BenchRequest]:
    """The pool of requests one workload cycles through."""
    rng = random.Random(f"{_SEED}:{workload}")  # noqa: S311 - repeatable, not secret
    match workload:
        case "get":
            return [_item_lookup(rng) for _ in range(POOL_SIZE)]
        case "post":
            return [_cart_availability(rng) for _ in range(POOL_SIZE)]
        case "mix":
            return [
                _cart_availability(rng)
                if i % MIX_POST_EVERY == 0
                else _item_lookup(rng)
                for i in range(POOL_SIZE)
            ]
        case "hot":
            return [_availability([HOT_ITEMS[i % len(HOT_ITEMS)]]) for i in range(64)]
    raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")


def _sku(rng: random.Random) -> str:
    return f"SKU-{rng.randrange(CATALOG_SIZE):04d}"


def _item_lookup(rng: random.Random) -> BenchRequest:
    return BenchRequest("GET", f"/inventory/{TENANT}/v1/items/{_sku(rng)}")


def _cart_availability(rng: random.Random) -> BenchRequest:
    return _availability([_sku(rng) for _ in range(LINES_PER_CART)])


def _availability(item_ids: list[str]) -> BenchRequest:
    lines = [
        {
            "lineId": str(number),
            "itemId": item_id,
            "unitOfMeasure": "EACH",
            "productClass": "NEW",
            "deliveryMethod": "SHP",
        }
        for number, item_id in enumerate(item_ids, start=1)
    ]
    body = {"distributionGroupId": "DG_ONLINE", "lines": lines}
    return BenchRequest(
        "POST",
        f"/inventory/{TENANT}/v1/availability/network",
        json.dumps(body, separators=(",", ":")).encode(),
    )
