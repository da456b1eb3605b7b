"""The demo IBM promising service: estimated delivery dates for one item.

UPSTREAMS.md gives the promising base (`/promising/{tenantId}/v1/...`) and the request
fields, not the path, so the resource is named for what it answers. Route, relative to
where the app is mounted (the demo backend mounts it at `/promising`):

- `POST /{tenantId}/v1/delivery-dates` with `itemInfo`, `destination` and
  `shippingGroupId`.

The estimate ships from the first node of a distribution group that holds the item
(on hand first, then inbound supply) and adds the transit days of the shipping group,
so it agrees with the inventory service reading the same `InventoryStock`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from aiohttp import web

from proxy.demo.stock import InventoryStock, format_vendor_ts
from proxy.demo.upstreams import (
    InvalidBody,
    JsonObject,
    TokenVerifier,
    UpstreamRecorder,
    protected_app,
    read_json_object,
    require_str,
)

__all__ = ["SHIPPING_GROUPS", "ShippingGroup", "build_promising_app"]


@dataclass(frozen=True)
class ShippingGroup:
    """A carrier service and its transit time in days, domestic and abroad."""

    carrier_service_code: str
    min_transit_days: int
    max_transit_days: int
    international_extra_days: int = 4


SHIPPING_GROUPS = MappingProxyType(
    {
        "STANDARD": ShippingGroup("UPS_GROUND", 3, 5),
        "EXPRESS": ShippingGroup("UPS_2ND_DAY_AIR", 2, 2),
        "NEXT_DAY": ShippingGroup("UPS_NEXT_DAY_AIR", 1, 1),
    }
)

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


def build_promising_app(
    verify: TokenVerifier,
    recorder: UpstreamRecorder,
    stock: InventoryStock,
    *,
    tenant_id: str,
    distribution_group_id: str = "DG_ONLINE",
    home_country: str = "US",
) -> web.Application:
    """Return the promising service app for one tenant, protected by `verify`.

    Estimates ship from the nodes of `distribution_group_id` in `stock`; destinations
    outside `home_country` take the shipping group's extra international days.
    """
    nodes = stock.nodes_of(distribution_group_id)
    if nodes is None:
        raise ValueError(
            f"distribution group {distribution_group_id!r} is not in the stock; "
            f"known groups: {sorted(stock.distribution_groups)}"
        )

    service = _PromisingService(stock, nodes, home_country)
    app = protected_app(verify, recorder, realm="promising")
    app.router.add_post(f"/{tenant_id}/v1/delivery-dates", service.delivery_dates)
    return app


class _PromisingService:
    def __init__(
        self, stock: InventoryStock, nodes: tuple[str, ...], home_country: str
    ) -> None:
        self._stock = stock
        self._nodes = nodes
        self._home_country = home_country

    async def delivery_dates(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            item_info = _item_info(body)
            country = _destination_country(body)
            group_id = require_str(body, "shippingGroupId")
        except InvalidBody as exc:
            return _bad_request(str(exc))
        group = SHIPPING_GROUPS.get(group_id)
        if group is None:
            known = ", ".join(SHIPPING_GROUPS)
            return _bad_request(f"shippingGroupId {group_id} is not one of {known}.")

        estimates = []
        source = self._source(str(item_info["itemId"]))
        if source is not None:
            ship_node, ship_at = source
            extra = (
                0 if country == self._home_country else group.international_extra_days
            )
            earliest = ship_at + timedelta(days=group.min_transit_days + extra)
            latest = ship_at + timedelta(days=group.max_transit_days + extra)
            estimates.append(
                {
                    "shipNode": ship_node,
                    "carrierServiceCode": group.carrier_service_code,
                    "shipTs": format_vendor_ts(ship_at),
                    "earliestDeliveryTs": format_vendor_ts(earliest),
                    "latestDeliveryTs": format_vendor_ts(latest),
                }
            )

        answer = {
            "itemInfo": item_info,
            "shippingGroupId": group_id,
            "deliveryDates": estimates,
        }
        return web.json_response(answer)

    def _source(self, item_id: str) -> tuple[str, datetime] | None:
        """The node and time of the earliest shipment, or None without any supply."""
        candidates = []
        for node in self._nodes:
            ship_at = self._stock.node_supply(item_id, node).earliest_ship_at
            if ship_at is not None:
                candidates.append((ship_at, node))
        if not candidates:
            return None

        ship_at, node = min(candidates)
        return node, ship_at


def _item_info(body: JsonObject) -> JsonObject:
    raw = body.get("itemInfo")
    if not isinstance(raw, dict):
        raise InvalidBody("itemInfo is required and must be an object.")

    info: JsonObject = {
        "itemId": require_str(raw, "itemId", "itemInfo."),
        "unitOfMeasure": require_str(raw, "unitOfMeasure", "itemInfo."),
    }
    if "productClass" in raw:
        info["productClass"] = require_str(raw, "productClass", "itemInfo.")
    return info


def _destination_country(body: JsonObject) -> str:
    destination = body.get("destination")
    if not isinstance(destination, dict):
        raise InvalidBody("destination is required and must be an object.")
    if destination.get("format") != "ADDRESS":
        raise InvalidBody("destination.format must be ADDRESS.")
    value = destination.get("value")
    if not isinstance(value, dict):
        raise InvalidBody("destination.value is required and must be an object.")

    country = require_str(value, "countryCode", "destination.value.")
    require_str(value, "postalCode", "destination.value.")
    if not _COUNTRY_CODE.fullmatch(country):
        raise InvalidBody(
            f"destination.value.countryCode must be an ISO 3166 alpha-2 code, "
            f"not {country!r}."
        )
    return country


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error_message": message}, status=400)
