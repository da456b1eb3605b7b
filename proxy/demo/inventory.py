"""The demo IBM inventory visibility service: availability and reservations.

Routes, relative to where the app is mounted (the demo backend mounts it at
`/inventory`, so paths read as the vendor's `{base}/v1/...`):

- `POST /{tenantId}/v1/availability/network`: supply per line across a distribution
  group.
- `POST /{tenantId}/v1/availability/node`: supply per line at each listed ship node.
- `POST /{tenantId}/v1/reservations`: hold on-hand units; later availability is lower.

Bodies are validated as the vendor does: a 400 answer carries `{"error_message": ...}`,
including the tenant limit on item-location pairs per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import uuid4

from aiohttp import web

from proxy.demo.stock import InventoryStock, Supply, format_vendor_ts
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

__all__ = ["DEFAULT_TIME_TO_EXPIRE_MIN", "MAX_PAIRS_PER_REQUEST", "build_inventory_app"]

MAX_PAIRS_PER_REQUEST = 100
"""The vendor's default tenant limit on item-location pairs in one request."""

DEFAULT_TIME_TO_EXPIRE_MIN = 15
"""Minutes a reservation lives when the request gives no `timeToExpire`."""

_DELIVERY_METHODS = frozenset({"SHP", "PICK"})

_Kind = Literal["network", "node", "reservation"]


def build_inventory_app(
    verify: TokenVerifier,
    recorder: UpstreamRecorder,
    stock: InventoryStock,
    *,
    tenant_id: str,
    max_pairs: int = MAX_PAIRS_PER_REQUEST,
) -> web.Application:
    """Return the inventory service app for one tenant, protected by `verify`.

    Every request is recorded in `recorder`. Reservations change `stock`, which the
    caller may share with other services (the promising service reads it too).
    """
    service = _InventoryService(stock, tenant_id, max_pairs)
    app = protected_app(verify, recorder, realm="inventory")
    base = f"/{tenant_id}/v1"
    app.router.add_post(f"{base}/availability/network", service.network_availability)
    app.router.add_post(f"{base}/availability/node", service.node_availability)
    app.router.add_post(f"{base}/reservations", service.reserve)
    return app


@dataclass(frozen=True)
class _Line:
    line_id: str
    item_id: str
    echo: JsonObject
    ship_nodes: tuple[str, ...] = ()
    quantity: int = 0


class _InventoryService:
    def __init__(self, stock: InventoryStock, tenant_id: str, max_pairs: int) -> None:
        self._stock = stock
        self._tenant_id = tenant_id
        self._max_pairs = max_pairs

    async def network_availability(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            group = require_str(body, "distributionGroupId")
            lines = self._parse_lines(body, "network")
        except InvalidBody as exc:
            return _bad_request(str(exc))
        if self._stock.nodes_of(group) is None:
            tenant = self._tenant_id
            return _bad_request(
                f"Distribution group {group} is not defined for tenant {tenant}."
            )

        answer = []
        for line in lines:
            supply = self._stock.network_supply(line.item_id, group)
            availability = {"distributionGroupId": group, **_supply_fields(supply)}
            answer.append({**line.echo, "networkAvailabilities": [availability]})
        return web.json_response({"lines": answer})

    async def node_availability(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            lines = self._parse_lines(body, "node")
        except InvalidBody as exc:
            return _bad_request(str(exc))

        answer = []
        for line in lines:
            per_node = [
                _node_fields(node, self._stock.node_supply(line.item_id, node))
                for node in line.ship_nodes
            ]
            answer.append({**line.echo, "shipNodeAvailability": per_node})
        return web.json_response({"lines": answer})

    async def reserve(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
            require_str(body, "reference")
            minutes = _time_to_expire_min(body)
            lines = self._parse_lines(body, "reservation")
        except InvalidBody as exc:
            return _bad_request(str(exc))

        answer = []
        for line in lines:
            held = self._stock.reserve(
                line.item_id,
                line.ship_nodes[0],
                line.quantity,
                time_to_expire_s=minutes * 60,
            )
            answer.append(
                {
                    "lineId": line.line_id,
                    "reservationId": str(uuid4()),
                    "reservedQuantity": held,
                }
            )
        return web.json_response({"lines": answer})

    def _parse_lines(self, body: JsonObject, kind: _Kind) -> list[_Line]:
        raw_lines = require_list(body, "lines")
        pairs = sum(_pairs_in(raw, kind) for raw in raw_lines)
        if pairs > self._max_pairs:
            raise InvalidBody(
                f"Number of actions in input ({pairs}) is greater than the tenant "
                f"limit of {self._max_pairs}."
            )

        lines = [
            _parse_line(raw, f"lines[{i}].", kind) for i, raw in enumerate(raw_lines)
        ]
        seen: set[str] = set()
        for line in lines:
            if line.line_id in seen:
                raise InvalidBody(f"lineId {line.line_id} appears more than once.")
            seen.add(line.line_id)
        return lines


def _parse_line(raw: JsonObject, where: str, kind: _Kind) -> _Line:
    line_id = require_str(raw, "lineId", where)
    item_id = require_str(raw, "itemId", where)
    echo: JsonObject = {
        "lineId": line_id,
        "itemId": item_id,
        "unitOfMeasure": require_str(raw, "unitOfMeasure", where),
    }
    for optional in ("productClass", "deliveryMethod"):
        if optional in raw:
            echo[optional] = require_str(raw, optional, where)
    if echo.get("deliveryMethod", "SHP") not in _DELIVERY_METHODS:
        raise InvalidBody(f"{where}deliveryMethod must be one of SHP, PICK.")

    if kind == "node":
        return _Line(line_id, item_id, echo, ship_nodes=_ship_nodes(raw, where))
    if kind == "reservation":
        node = require_str(raw, "shipNode", where)
        quantity = raw.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise InvalidBody(
                f"{where}quantity is required and must be a positive integer."
            )
        return _Line(line_id, item_id, echo, ship_nodes=(node,), quantity=quantity)
    return _Line(line_id, item_id, echo)


def _ship_nodes(raw: JsonObject, where: str) -> tuple[str, ...]:
    nodes = raw.get("shipNodes")
    if (
        not isinstance(nodes, list)
        or not nodes
        or not all(isinstance(n, str) and n.strip() for n in nodes)
    ):
        raise InvalidBody(f"{where}shipNodes is required and must list ship node ids.")
    return tuple(nodes)


def _pairs_in(raw: JsonObject, kind: _Kind) -> int:
    nodes = raw.get("shipNodes")
    if kind == "node" and isinstance(nodes, list):
        return max(1, len(nodes))
    return 1


def _time_to_expire_min(body: JsonObject) -> int:
    minutes = body.get("timeToExpire", DEFAULT_TIME_TO_EXPIRE_MIN)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1:
        raise InvalidBody("timeToExpire must be a positive number of minutes.")
    return minutes


def _supply_fields(supply: Supply) -> JsonObject:
    return {
        "totalAvailableQuantity": supply.total_quantity,
        "onhandAvailableQuantity": supply.onhand_quantity,
        "futureAvailableQuantity": supply.future_quantity,
        "earliestShipTs": format_vendor_ts(supply.earliest_ship_at),
        "onhandEarliestShipTs": format_vendor_ts(supply.onhand_ship_at),
        "futureEarliestShipTs": format_vendor_ts(supply.future_ship_at),
    }


def _node_fields(ship_node: str, supply: Supply) -> JsonObject:
    return {
        "shipNode": ship_node,
        **_supply_fields(supply),
        "latestShipTs": format_vendor_ts(supply.latest_ship_at),
    }


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error_message": message}, status=400)
