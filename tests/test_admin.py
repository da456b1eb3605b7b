"""The operator's endpoints: metrics, token status and a forced refresh."""

from __future__ import annotations

import asyncio
import hashlib
import re

from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import ProxyFactory, RecordingUpstream, sample

PROMETHEUS_KEY = "prom-key-0d9f8e7c6b5a"


async def test_metrics_count_calls_tokens_and_replays(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Calls by upstream and status class, token requests, replays, expiry."""
    proxy = await make_proxy()
    for _ in range(3):
        await proxy.get("/inventory/items/1")
    idp.revoke()
    await proxy.get("/inventory/items/2")
    await proxy.get("/nowhere")

    response = await proxy.get("/metrics")

    text = await response.text()
    assert response.status == 200
    assert response.content_type == "text/plain"
    calls = "inventory_proxy_calls_total"
    assert sample(text, calls, upstream="inventory", status_class="2xx") == 4
    assert sample(text, calls, upstream="none", status_class="4xx") == 1
    assert sample(text, "inventory_proxy_replays_total", upstream="inventory") == 1
    tokens = "inventory_proxy_token_requests_total"
    assert sample(text, tokens, source="iv", outcome="ok") == 2
    expires_in = sample(text, "inventory_proxy_token_expires_in_seconds", source="iv")
    assert expires_in is not None
    assert 0 < expires_in <= 60
    assert sample(text, "inventory_proxy_token_budget_remaining", source="iv") == 598
    assert sample(text, "inventory_proxy_calls_in_flight") == 1
    assert re.search(r"inventory_proxy_call_duration_seconds_count\{.*\} 4", text)


async def test_tokens_show_state_without_the_token(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Each source's state, expiry and request count; the value never appears."""
    proxy = await make_proxy()
    await proxy.get("/inventory/items/1")

    response = await proxy.get("/tokens")

    body = await response.json()
    assert response.status == 200
    assert body["iv"]["state"] == "valid"
    assert 0 < body["iv"]["expires_in_s"] <= 60
    assert body["iv"]["requests_last_hour"] == 1
    assert body["iv"]["last_error"] is None
    assert idp.last_token is not None
    assert idp.last_token not in await response.text()


async def test_forced_refreshes_share_one_token_request(
    make_proxy: ProxyFactory, idp: IdentityProvider
) -> None:
    """Ten concurrent forced refreshes cost the provider one request."""
    proxy = await make_proxy()
    assert (await proxy.get("/readyz")).status == 200

    responses = await asyncio.gather(
        *(proxy.post("/tokens/iv/refresh") for _ in range(10))
    )

    assert [response.status for response in responses] == [200] * 10
    assert idp.token_requests == 2


async def test_refresh_of_an_unknown_source_is_404(make_proxy: ProxyFactory) -> None:
    """Refreshing a source that does not exist names it."""
    proxy = await make_proxy()

    response = await proxy.post("/tokens/nope/refresh")

    assert response.status == 404
    assert "nope" in (await response.json())["detail"]


async def test_partners_need_an_admin_grant_for_operator_endpoints(
    make_proxy: ProxyFactory,
) -> None:
    """A scraper with admin:GET may read metrics; an ordinary partner may not."""
    digest = hashlib.sha256(PROMETHEUS_KEY.encode()).hexdigest()
    partner_digest = hashlib.sha256(b"partner-key-1234").hexdigest()
    proxy = await make_proxy(
        server={"trusted_networks": []},
        clients={
            "prometheus": {"api_key_sha256": [digest], "allow": ["admin:GET"]},
            "partner": {"api_key_sha256": [partner_digest], "allow": ["inventory:*"]},
        },
    )

    scrape = await proxy.get("/metrics", headers={"X-API-Key": PROMETHEUS_KEY})
    partner = await proxy.get("/tokens", headers={"X-API-Key": "partner-key-1234"})
    refresh = await proxy.post(
        "/tokens/iv/refresh", headers={"X-API-Key": PROMETHEUS_KEY}
    )
    anonymous = await proxy.get("/metrics")

    assert scrape.status == 200
    assert partner.status == 403
    assert refresh.status == 403
    assert anonymous.status == 401
