"""Tests for the demo upstreams: the bearer check, the call record and the services."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from proxy.demo.identity_provider import IdentityProvider
from proxy.demo.inventory import build_inventory_app
from proxy.demo.pricing import build_price_app
from proxy.demo.promising import build_promising_app
from proxy.demo.stock import NO_SUPPLY_TS, InventoryStock, format_vendor_ts
from proxy.demo.upstreams import UpstreamRecorder

TENANT = "t-100"
NOW = datetime(2026, 12, 4, 7, 30, tzinfo=UTC)
IV = f"/{TENANT}/v1"
NETWORK_FIELDS = {
    "distributionGroupId",
    "totalAvailableQuantity",
    "onhandAvailableQuantity",
    "futureAvailableQuantity",
    "earliestShipTs",
    "onhandEarliestShipTs",
    "futureEarliestShipTs",
}
DELIVERY_REQUEST = {
    "shippingGroupId": "STANDARD",
    "itemInfo": {"itemId": "SKU-1024", "unitOfMeasure": "EACH", "productClass": "NEW"},
    "destination": {
        "format": "ADDRESS",
        "value": {"countryCode": "US", "postalCode": "10001"},
    },
}

Client = TestClient[web.Request, web.Application]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def line(line_id: str, item_id: str = "SKU-1024", **extra: object) -> dict[str, object]:
    """An inventory request line with the vendor's required fields."""
    return {"lineId": line_id, "itemId": item_id, "unitOfMeasure": "EACH", **extra}


def parse_vendor_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(clock: FakeClock) -> IdentityProvider:
    return IdentityProvider({"oms": "secret"}, token_lifetime_s=60, clock=clock)


@pytest.fixture
async def token(idp: IdentityProvider, aiohttp_client: AiohttpClient) -> str:
    idp_client = await aiohttp_client(idp.build_app())
    form = {"grant_type": "client_credentials", "client_id": "oms"}
    response = await idp_client.post(
        "/oauth2/token", data={**form, "client_secret": "secret"}
    )
    issued: str = (await response.json())["access_token"]
    return issued


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stock(clock: FakeClock) -> InventoryStock:
    return InventoryStock(now=lambda: NOW, monotonic=clock)


@pytest.fixture
def recorder() -> UpstreamRecorder:
    return UpstreamRecorder()


@pytest.fixture
async def inventory(
    idp: IdentityProvider,
    recorder: UpstreamRecorder,
    stock: InventoryStock,
    aiohttp_client: AiohttpClient,
) -> Client:
    app = build_inventory_app(idp.verify, recorder, stock, tenant_id=TENANT)
    return await aiohttp_client(app)


@pytest.fixture
async def prices(
    idp: IdentityProvider, recorder: UpstreamRecorder, aiohttp_client: AiohttpClient
) -> Client:
    return await aiohttp_client(build_price_app(idp.verify, recorder, now=lambda: NOW))


@pytest.fixture
async def promising(
    idp: IdentityProvider,
    recorder: UpstreamRecorder,
    stock: InventoryStock,
    aiohttp_client: AiohttpClient,
) -> Client:
    app = build_promising_app(idp.verify, recorder, stock, tenant_id=TENANT)
    return await aiohttp_client(app)


# The bearer check and the record of calls.


async def test_valid_token_reaches_the_service_and_is_recorded(
    prices: Client, recorder: UpstreamRecorder, auth: dict[str, str]
) -> None:
    """A request with a valid token is answered and recorded as authorized."""
    response = await prices.get("/v1/prices?itemId=SKU-1", headers=auth)

    assert response.status == 200
    assert recorder.authorized == 1
    assert recorder.unauthorized == 0


async def test_missing_token_gets_a_challenge_without_error_code(
    prices: Client, recorder: UpstreamRecorder
) -> None:
    """No token gets a 401 whose challenge carries no error (RFC 6750 section 3.1)."""
    response = await prices.get("/v1/prices?itemId=SKU-1")

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="price"'
    assert (await response.json())["error"] == "invalid_token"
    assert not recorder.last.authorized


async def test_expired_token_gets_401_and_is_recorded_as_unauthorized(
    inventory: Client,
    recorder: UpstreamRecorder,
    clock: FakeClock,
    auth: dict[str, str],
) -> None:
    """A token past its lifetime gets 401 invalid_token and never reaches a handler."""
    clock.now += 60
    body = {"distributionGroupId": "DG_ONLINE", "lines": [line("1")]}

    response = await inventory.post(
        f"{IV}/availability/network", json=body, headers=auth
    )
    answer = await response.json()

    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert set(answer) == {"error", "error_description"}
    assert len(recorder) == 1
    assert not recorder.last.authorized


async def test_revoked_token_gets_401_and_is_recorded_as_unauthorized(
    prices: Client,
    recorder: UpstreamRecorder,
    idp: IdentityProvider,
    auth: dict[str, str],
) -> None:
    """A revoked token is refused like an expired one."""
    idp.revoke()

    response = await prices.get("/v1/prices?itemId=SKU-1", headers=auth)

    assert response.status == 401
    assert recorder.unauthorized == 1


async def test_recorded_call_keeps_the_raw_request(
    prices: Client, recorder: UpstreamRecorder, token: str, auth: dict[str, str]
) -> None:
    """The record keeps method, raw path and query, headers and body as sent."""
    body = b'{"currency": "USD", "items": [{"itemId": "SKU-1"}]}'

    await prices.get("/v1/prices?itemId=SKU%261&itemId=SKU-2", headers=auth)
    await prices.post("/v1/prices", data=body, headers=auth)
    first, second = recorder.calls

    assert (first.method, first.path_qs) == (
        "GET",
        "/v1/prices?itemId=SKU%261&itemId=SKU-2",
    )
    assert first.bearer_token == token
    assert first.body == b""
    assert second.body == body
    assert second.json() == {"currency": "USD", "items": [{"itemId": "SKU-1"}]}


async def test_recorded_call_repr_leaves_the_token_out(
    prices: Client, recorder: UpstreamRecorder, token: str, auth: dict[str, str]
) -> None:
    """Printing a recorded call, as a failing assertion does, shows no token."""
    await prices.get("/v1/prices?itemId=SKU-1", headers=auth)

    assert token not in repr(recorder.last)


# Inventory: availability and reservations.


async def test_network_availability_answers_the_vendor_fields(
    inventory: Client, stock: InventoryStock, auth: dict[str, str]
) -> None:
    """Network availability answers each line with the vendor's field set."""
    body = {
        "distributionGroupId": "DG_ONLINE",
        "lines": [
            line("1", productClass="NEW", deliveryMethod="SHP"),
            line("2", "SKU-7"),
        ],
    }

    response = await inventory.post(
        f"{IV}/availability/network", json=body, headers=auth
    )
    lines = (await response.json())["lines"]

    assert response.status == 200
    assert [answer["lineId"] for answer in lines] == ["1", "2"]
    first = lines[0]["networkAvailabilities"][0]
    assert set(first) == NETWORK_FIELDS
    supply = stock.network_supply("SKU-1024", "DG_ONLINE")
    assert first["totalAvailableQuantity"] == supply.total_quantity
    assert first["onhandEarliestShipTs"] == "2026-12-04T10:00:00.000+0000"
    assert first["futureEarliestShipTs"] == format_vendor_ts(supply.future_ship_at)


async def test_node_availability_answers_each_ship_node(
    inventory: Client, auth: dict[str, str]
) -> None:
    """Node availability answers one entry per requested ship node."""
    body = {"lines": [line("1", shipNodes=["DC1", "STORE7"])]}

    response = await inventory.post(f"{IV}/availability/node", json=body, headers=auth)
    nodes = (await response.json())["lines"][0]["shipNodeAvailability"]

    assert response.status == 200
    assert [node["shipNode"] for node in nodes] == ["DC1", "STORE7"]
    assert {"totalAvailableQuantity", "earliestShipTs", "latestShipTs"} <= set(nodes[0])


async def test_more_than_100_item_location_pairs_are_refused(
    inventory: Client, auth: dict[str, str]
) -> None:
    """310 item-location pairs get the vendor's 400 with the tenant limit."""
    nodes = [f"DC{n}" for n in range(10)]
    body = {"lines": [line(str(n), shipNodes=nodes) for n in range(31)]}

    response = await inventory.post(f"{IV}/availability/node", json=body, headers=auth)

    assert response.status == 400
    assert await response.json() == {
        "error_message": "Number of actions in input (310) is greater than the "
        "tenant limit of 100."
    }


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"lines": [line("1")]}, "distributionGroupId"),
        ({"distributionGroupId": "DG_ONLINE", "lines": []}, "lines"),
        ({"distributionGroupId": "DG_ONLINE", "lines": [{"lineId": "1"}]}, "itemId"),
        (
            {"distributionGroupId": "DG_ONLINE", "lines": [line("1"), line("1")]},
            "more than once",
        ),
        (
            {
                "distributionGroupId": "DG_ONLINE",
                "lines": [line("1", deliveryMethod="X")],
            },
            "deliveryMethod",
        ),
        ({"distributionGroupId": "DG_NOWHERE", "lines": [line("1")]}, "DG_NOWHERE"),
    ],
)
async def test_invalid_availability_request_is_refused_with_its_reason(
    inventory: Client, auth: dict[str, str], body: dict[str, object], complaint: str
) -> None:
    """A malformed availability request gets a 400 naming the offending field."""
    response = await inventory.post(
        f"{IV}/availability/network", json=body, headers=auth
    )

    assert response.status == 400
    assert complaint in (await response.json())["error_message"]


async def test_body_that_is_not_json_is_refused(
    inventory: Client, auth: dict[str, str]
) -> None:
    """A body that is not JSON gets a 400, not a 500."""
    response = await inventory.post(
        f"{IV}/availability/network", data=b"{not json", headers=auth
    )

    assert response.status == 400


async def test_reservation_holds_units_and_lowers_availability(
    inventory: Client, stock: InventoryStock, auth: dict[str, str]
) -> None:
    """A reservation answers a reservation id and the node has that much less."""
    before = stock.node_supply("SKU-1024", "DC1").onhand_quantity
    assert before >= 2
    body = {
        "reference": "CART-123",
        "timeToExpire": 15,
        "lines": [line("1", shipNode="DC1", quantity=2)],
    }

    response = await inventory.post(f"{IV}/reservations", json=body, headers=auth)
    reserved = (await response.json())["lines"][0]

    assert response.status == 200
    assert reserved["reservedQuantity"] == 2
    assert re.fullmatch(r"[0-9a-f-]{36}", reserved["reservationId"])
    assert stock.node_supply("SKU-1024", "DC1").onhand_quantity == before - 2


async def test_reservation_never_exceeds_what_is_on_hand(
    inventory: Client, stock: InventoryStock, auth: dict[str, str]
) -> None:
    """Asking for more than is on hand reserves only what is there."""
    before = stock.node_supply("SKU-1024", "DC1").onhand_quantity
    body = {
        "reference": "CART-124",
        "lines": [line("1", shipNode="DC1", quantity=before + 5)],
    }

    response = await inventory.post(f"{IV}/reservations", json=body, headers=auth)

    assert (await response.json())["lines"][0]["reservedQuantity"] == before
    assert stock.node_supply("SKU-1024", "DC1").onhand_quantity == 0


def test_reserved_units_come_back_when_the_reservation_expires(
    stock: InventoryStock, clock: FakeClock
) -> None:
    """Units held by a reservation are available again after its time to expire."""
    before = stock.node_supply("SKU-1024", "DC1").onhand_quantity
    stock.reserve("SKU-1024", "DC1", 1, time_to_expire_s=900)

    held = stock.node_supply("SKU-1024", "DC1").onhand_quantity
    clock.now += 900

    assert held == before - 1
    assert stock.node_supply("SKU-1024", "DC1").onhand_quantity == before


def test_supply_depends_only_on_item_and_node() -> None:
    """Two stocks agree on every quantity, so runs and tests are reproducible."""
    first, second = InventoryStock(), InventoryStock()

    quantities = [
        (first.node_supply(f"SKU-{n}", "DC1"), second.node_supply(f"SKU-{n}", "DC1"))
        for n in range(20)
    ]

    assert all(a.total_quantity == b.total_quantity for a, b in quantities)


def test_distribution_centers_hold_stock_and_stores_run_out() -> None:
    """DCs always hold 20 units or more; some store shelves are empty."""
    stock = InventoryStock()
    items = [f"SKU-{n}" for n in range(40)]

    dc_onhand = [stock.node_supply(item, "DC1").onhand_quantity for item in items]
    store_onhand = [stock.node_supply(item, "STORE7").onhand_quantity for item in items]

    assert min(dc_onhand) >= 20
    assert 0 in store_onhand
    assert max(store_onhand) <= 12


def test_vendor_timestamps_are_utc_with_milliseconds() -> None:
    """Timestamps read like the vendor's and "never" is its 2500 sentinel."""
    noon_utc = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    plus_two = noon_utc.astimezone(timezone(timedelta(hours=2)))

    assert format_vendor_ts(plus_two) == "2026-12-04T12:00:00.123+0000"
    assert format_vendor_ts(None) == NO_SUPPLY_TS


# Pricing.


async def test_prices_by_query_answer_decimal_strings(
    prices: Client, auth: dict[str, str]
) -> None:
    """Each requested item gets a list price as a decimal string, effective today."""
    response = await prices.get(
        "/v1/prices?itemId=SKU-1&itemId=SKU-2&itemId=SKU-3&currency=EUR", headers=auth
    )
    answer = (await response.json())["prices"]

    assert response.status == 200
    assert [price["itemId"] for price in answer] == ["SKU-1", "SKU-2", "SKU-3"]
    for price in answer:
        assert price["currency"] == "EUR"
        assert re.fullmatch(r"\d+\.\d{2}", price["listPrice"])
        assert price["effectiveFrom"] == "2026-12-04T00:00:00Z"
        if "salePrice" in price:
            assert float(price["salePrice"]) < float(price["listPrice"])


async def test_prices_by_body_match_prices_by_query(
    prices: Client, auth: dict[str, str]
) -> None:
    """POST with an item list answers exactly what GET answers."""
    body = {"currency": "USD", "items": [{"itemId": "SKU-1"}, {"itemId": "SKU-2"}]}

    by_body = await prices.post("/v1/prices", json=body, headers=auth)
    by_query = await prices.get("/v1/prices?itemId=SKU-1&itemId=SKU-2", headers=auth)

    assert await by_body.json() == await by_query.json()


async def test_unknown_currency_is_refused_as_problem_details(
    prices: Client, auth: dict[str, str]
) -> None:
    """An unpriced currency gets an RFC 9457 problem naming it."""
    response = await prices.get("/v1/prices?itemId=SKU-1&currency=XYZ", headers=auth)

    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert "'XYZ'" in (await response.json())["detail"]


# Promising.


async def test_delivery_dates_answer_ship_node_carrier_and_window(
    promising: Client, auth: dict[str, str]
) -> None:
    """A standard estimate ships from a node and arrives in three to five days."""
    response = await promising.post(
        f"/{TENANT}/v1/delivery-dates", json=DELIVERY_REQUEST, headers=auth
    )
    answer = await response.json()

    assert response.status == 200
    assert answer["itemInfo"] == DELIVERY_REQUEST["itemInfo"]
    estimate = answer["deliveryDates"][0]
    assert estimate["carrierServiceCode"] == "UPS_GROUND"
    shipped = parse_vendor_ts(estimate["shipTs"])
    assert parse_vendor_ts(estimate["earliestDeliveryTs"]) == shipped + timedelta(
        days=3
    )
    assert parse_vendor_ts(estimate["latestDeliveryTs"]) == shipped + timedelta(days=5)


async def test_international_destination_takes_longer(
    promising: Client, auth: dict[str, str]
) -> None:
    """A destination abroad adds the shipping group's international days."""
    abroad = {
        **DELIVERY_REQUEST,
        "destination": {
            "format": "ADDRESS",
            "value": {"countryCode": "DE", "postalCode": "10115"},
        },
    }
    path = f"/{TENANT}/v1/delivery-dates"

    home = await promising.post(path, json=DELIVERY_REQUEST, headers=auth)
    away = await promising.post(path, json=abroad, headers=auth)
    home_ts = (await home.json())["deliveryDates"][0]["earliestDeliveryTs"]
    away_ts = (await away.json())["deliveryDates"][0]["earliestDeliveryTs"]

    assert parse_vendor_ts(away_ts) - parse_vendor_ts(home_ts) == timedelta(days=4)


async def test_item_without_supply_gets_no_delivery_dates(
    idp: IdentityProvider,
    recorder: UpstreamRecorder,
    aiohttp_client: AiohttpClient,
    auth: dict[str, str],
) -> None:
    """With no node holding the item the answer lists no delivery dates."""
    empty = InventoryStock({"DG_EMPTY": ()})
    app = build_promising_app(
        idp.verify, recorder, empty, tenant_id=TENANT, distribution_group_id="DG_EMPTY"
    )
    client = await aiohttp_client(app)

    response = await client.post(
        f"/{TENANT}/v1/delivery-dates", json=DELIVERY_REQUEST, headers=auth
    )

    assert response.status == 200
    assert (await response.json())["deliveryDates"] == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"destination": {"format": "GEO", "value": {}}}, "ADDRESS"),
        ({"shippingGroupId": "TELEPORT"}, "TELEPORT"),
        ({"itemInfo": {"itemId": "SKU-1"}}, "unitOfMeasure"),
    ],
)
async def test_invalid_delivery_request_is_refused_with_its_reason(
    promising: Client,
    auth: dict[str, str],
    change: dict[str, object],
    complaint: str,
) -> None:
    """A malformed estimate request gets a 400 naming the offending field."""
    response = await promising.post(
        f"/{TENANT}/v1/delivery-dates",
        json={**DELIVERY_REQUEST, **change},
        headers=auth,
    )

    assert response.status == 400
    assert complaint in (await response.json())["error_message"]
