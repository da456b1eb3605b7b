"""The demo pricing service: list and sale prices per item.

IBM offers no price service, so this stands for the separate pricing service an estate
runs behind its own identity provider. Routes, relative to where the app is mounted (the
demo backend mounts it at `/price`):

- `GET /v1/prices?itemId=SKU-1&itemId=SKU-2&currency=USD`
- `POST /v1/prices` with `{"currency": "USD", "items": [{"itemId": "SKU-1"}]}`

Both answer `{"prices": [{"itemId", "currency", "listPrice", "salePrice"?,
"effectiveFrom"}]}` with amounts as decimal strings. Prices are a pure function of the
item id. Refusals are RFC 9457 problem details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from types import MappingProxyType

from aiohttp import web

from proxy.demo.upstreams import (
    InvalidBody,
    JsonObject,
    TokenVerifier,
    UpstreamRecorder,
    protected_app,
    read_json_object,
    require_list,
    require_str,
)

__all__ = ["MAX_ITEMS_PER_REQUEST", "build_price_app"]

MAX_ITEMS_PER_REQUEST = 50

_RATES_FROM_USD = MappingProxyType(
    {
        "USD": Decimal("1"),
        "EUR": Decimal("0.92"),
        "GBP": Decimal("0.79"),
        "CAD": Decimal("1.36"),
    }
)
_CENT = Decimal("0.01")


def build_price_app(
    verify: TokenVerifier,
    recorder: UpstreamRecorder,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """Return the pricing service app, protected by `verify`, recording into `recorder`.

    `now` dates the `effectiveFrom` of each price (the start of the current UTC day).
    """
    service = _PriceService(now)
    app = protected_app(verify, recorder, realm="price")
    app.router.add_get("/v1/prices", service.prices_by_query)
    app.router.add_post("/v1/prices", service.prices_by_body)
    return app


class _PriceService:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    async def prices_by_query(self, request: web.Request) -> web.Response:
        item_ids = request.query.getall("itemId", [])
        currency = request.query.get("currency", "USD")
        return self._answer(item_ids, currency)

    async def prices_by_body(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            items = require_list(body, "items")
            item_ids = [
                require_str(item, "itemId", f"items[{i}].")
                for i, item in enumerate(items)
            ]
            currency = body.get("currency", "USD")
        except InvalidBody as exc:
            return _problem(str(exc))
        if not isinstance(currency, str):
            return _problem("currency must be an ISO 4217 code such as USD.")
        return self._answer(item_ids, currency)

    def _answer(self, item_ids: Sequence[str], currency: str) -> web.Response:
        distinct = list(dict.fromkeys(item_ids))
        if not distinct or not all(item_id.strip() for item_id in distinct):
            return _problem("At least one non-empty itemId is required.")
        if len(distinct) > MAX_ITEMS_PER_REQUEST:
            return _problem(
                f"{len(distinct)} items requested; at most "
                f"{MAX_ITEMS_PER_REQUEST} are priced per request."
            )
        if currency not in _RATES_FROM_USD:
            supported = ", ".join(_RATES_FROM_USD)
            return _problem(f"Currency {currency!r} is not priced; use {supported}.")

        start_of_day = (
            self._now()
            .astimezone(UTC)
            .replace(hour=0, minute=0, second=0, microsecond=0)
        )
        effective_from = start_of_day.strftime("%Y-%m-%dT%H:%M:%SZ")
        prices = [_price(item_id, currency, effective_from) for item_id in distinct]
        return web.json_response({"prices": prices})


def _price(item_id: str, currency: str, effective_from: str) -> JsonObject:
    seed = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big")
    list_usd = Decimal(4 + seed % 496)
    rate = _RATES_FROM_USD[currency]

    list_price = _charm(list_usd * rate)
    sale_price = _charm(list_usd * rate * Decimal("0.8"))

    price: JsonObject = {"itemId": item_id, "currency": currency}
    price["listPrice"] = str(list_price)
    if seed % 3 == 0 and sale_price < list_price:
        price["salePrice"] = str(sale_price)
    price["effectiveFrom"] = effective_from
    return price


def _charm(amount: Decimal) -> Decimal:
    """Round down to whole units and end in .99, as shelf prices do."""
    return (amount.to_integral_value(ROUND_FLOOR) + Decimal("0.99")).quantize(_CENT)


def _problem(detail: str) -> web.Response:
    return web.json_response(
        {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": detail,
        },
        status=400,
        content_type="application/problem+json",
    )
