"""Tests for proxy.demo.backend: every demo system on one loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote_plus

import aiohttp
import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.typedefs import Handler

from proxy.demo.backend import DemoBackend

GRANT = {"grant_type": "client_credentials"}
LINE = {"lineId": "1", "itemId": "SKU-1024", "unitOfMeasure": "EACH"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def backend() -> AsyncIterator[DemoBackend]:
    async with DemoBackend(tenant_id="t-7") as backend:
        yield backend


async def ibm_token(
    session: aiohttp.ClientSession, backend: DemoBackend, token_url: str = ""
) -> str:
    """A token from the IBM provider, with RFC-encoded Basic credentials."""
    client = backend.inventory_client
    basic = encode_basic_auth(
        quote_plus(client.client_id), quote_plus(client.client_secret)
    )
    async with session.post(
        token_url or backend.inventory_token_url,
        data=GRANT,
        headers={"Authorization": basic},
    ) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
        return token


async def pricing_token(session: aiohttp.ClientSession, backend: DemoBackend) -> str:
    """A token from the generic provider, with client_secret_post."""
    client = backend.pricing_client
    form = {
        **GRANT,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    async with session.post(backend.pricing_token_url, data=form) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
        return token


async def test_every_service_answers_behind_its_token_endpoint(
    session: aiohttp.ClientSession, backend: DemoBackend
) -> None:
    """Each service answers 200 to a token from its own provider."""
    ibm = {"Authorization": f"Bearer {await ibm_token(session, backend)}"}
    price = {"Authorization": f"Bearer {await pricing_token(session, backend)}"}
    inventory = f"{backend.inventory_base_url}/t-7/v1"
    delivery = {
        "shippingGroupId": "EXPRESS",
        "itemInfo": {"itemId": "SKU-1024", "unitOfMeasure": "EACH"},
        "destination": {
            "format": "ADDRESS",
            "value": {"countryCode": "US", "postalCode": "10001"},
        },
    }
    network = {"distributionGroupId": "DG_ONLINE", "lines": [LINE]}
    node = {"lines": [{**LINE, "shipNodes": ["DC1"]}]}
    reserve = {
        "reference": "C-1",
        "lines": [{**LINE, "shipNode": "DC1", "quantity": 2}],
    }
    calls = [
        ("POST", f"{inventory}/availability/network", ibm, network),
        ("POST", f"{inventory}/availability/node", ibm, node),
        ("POST", f"{inventory}/reservations", ibm, reserve),
        ("POST", f"{backend.promising_base_url}/t-7/v1/delivery-dates", ibm, delivery),
        ("GET", f"{backend.price_base_url}/v1/prices?itemId=SKU-1024", price, None),
    ]

    statuses = []
    for method, url, headers, body in calls:
        async with session.request(method, url, json=body, headers=headers) as reply:
            statuses.append(reply.status)

    assert statuses == [200] * len(calls)
    assert backend.inventory_recorder.authorized == 3
    assert backend.promising_recorder.authorized == 1
    assert backend.price_recorder.authorized == 1


async def test_documented_reservation_is_fully_held(
    session: aiohttp.ClientSession, backend: DemoBackend
) -> None:
    """The vendor's example reservation (two SKU-1024 at DC1) holds both units."""
    headers = {"Authorization": f"Bearer {await ibm_token(session, backend)}"}
    body = {
        "reference": "CART-123",
        "timeToExpire": 15,
        "lines": [{**LINE, "shipNode": "DC1", "quantity": 2}],
    }
    url = f"{backend.inventory_base_url}/t-7/v1/reservations"

    async with session.post(url, json=body, headers=headers) as response:
        answer = await response.json()

    assert answer["lines"][0]["reservedQuantity"] == 2


async def test_promising_token_endpoint_belongs_to_the_ibm_provider(
    session: aiohttp.ClientSession, backend: DemoBackend
) -> None:
    """The token endpoint under /promising issues tokens the inventory accepts."""
    token = await ibm_token(session, backend, backend.promising_token_url)

    assert backend.inventory_idp.verify(token)
    assert backend.inventory_idp.token_requests == 1


async def test_tokens_from_one_provider_are_refused_by_the_other_services(
    session: aiohttp.ClientSession, backend: DemoBackend
) -> None:
    """An IBM token gets a 401 from the pricing service, which trusts another IdP."""
    headers = {"Authorization": f"Bearer {await ibm_token(session, backend)}"}
    url = f"{backend.price_base_url}/v1/prices?itemId=SKU-1"

    async with session.get(url, headers=headers) as response:
        status = response.status

    assert status == 401
    assert backend.price_recorder.unauthorized == 1


async def test_fault_middleware_added_before_start_takes_effect(
    session: aiohttp.ClientSession,
) -> None:
    """A middleware appended to a token endpoint's app before start answers for it."""
    backend = DemoBackend()

    @web.middleware
    async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
        return web.json_response({"error": "temporarily_unavailable"}, status=503)

    backend.inventory_token_app.middlewares.append(unavailable)

    async with backend, session.post(backend.inventory_token_url, data=GRANT) as reply:
        status = reply.status

    assert status == 503
    assert backend.inventory_idp.token_requests == 0


def test_client_credentials_are_random_and_hidden_from_repr() -> None:
    """Each backend registers fresh clients and never prints their secrets."""
    first, second = DemoBackend(), DemoBackend()

    assert first.inventory_client.client_id != second.inventory_client.client_id
    assert first.inventory_client.client_secret not in repr(first.inventory_client)


async def test_urls_exist_only_while_started() -> None:
    """URL properties raise before start and after stop, and stop is idempotent."""
    backend = DemoBackend()

    with pytest.raises(RuntimeError, match="start"):
        _ = backend.base_url
    async with backend:
        url = backend.base_url
    await backend.stop()

    assert url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = backend.base_url


async def test_backend_answers_health_checks(
    session: aiohttp.ClientSession, backend: DemoBackend
) -> None:
    """/healthz lets a container orchestrator see the backend is up."""
    async with session.get(f"{backend.base_url}/healthz") as response:
        status = response.status

    assert status == 200
