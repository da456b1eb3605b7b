"""Each upstream gets its own source's token; identical sources share one."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    AiohttpServer,
    ProxyFactory,
    RecordingUpstream,
)


async def test_two_providers_never_see_each_others_tokens(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    aiohttp_server: AiohttpServer,
) -> None:
    """Inventory and price sit behind different providers; no token crosses over."""
    pricing_idp = IdentityProvider({"oms-pricing": "pricing-secret-0123456789"})
    pricing_idp_server = await aiohttp_server(pricing_idp.build_app())
    price = RecordingUpstream(pricing_idp)
    price_server = await aiohttp_server(price.app())
    proxy = await make_proxy(
        token_sources={
            "pricing": {
                "token_url": str(pricing_idp_server.make_url("/oauth2/token")),
                "client_id": "oms-pricing",
                "client_secret": "pricing-secret-0123456789",
                "auth_method": "client_secret_post",
                "cold_start_wait_s": 0,
            }
        },
        upstreams={
            "price": {
                "path_prefix": "/price",
                "base_url": str(price_server.make_url("/")),
                "token_source": "pricing",
            }
        },
    )

    statuses = await asyncio.gather(
        *(proxy.get(f"/inventory/items/{n}") for n in range(10)),
        *(proxy.get(f"/price/v1/prices?itemId={n}") for n in range(10)),
    )

    assert [response.status for response in statuses] == [200] * 20
    assert all(call.authorized for call in upstream[0].calls + price.calls)
    assert idp.token_requests == pricing_idp.token_requests == 1


async def reservations_beside_inventory(
    make_proxy: ProxyFactory,
    idp_server: TestServer,
    upstream: TestServer,
    **source: object,
) -> None:
    """Call /inventory (source ``iv``) and /reservations (a second source).

    The second source is the same client at the same provider; ``source`` adds to
    or changes its settings.
    """
    proxy = await make_proxy(
        token_sources={
            "second": {
                "token_url": str(idp_server.make_url("/oauth2/token")),
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "timeout_s": 2,
                "cold_start_wait_s": 0,
                **source,
            }
        },
        upstreams={
            "reservations": {
                "path_prefix": "/reservations",
                "base_url": str(upstream.make_url("/reservations")),
                "token_source": "second",
            }
        },
    )
    await proxy.get("/inventory/a")
    await proxy.get("/reservations/b")


async def test_sources_with_identical_requests_share_one_token(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Two names for the same client and parameters cause one token request."""
    await reservations_beside_inventory(make_proxy, idp_server, upstream[1])

    tokens = {call.headers["Authorization"] for call in upstream[0].calls}
    assert idp.token_requests == 1
    assert len(tokens) == 1


async def test_a_different_scope_gets_a_token_of_its_own(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Same client, another scope: another holder, another token."""
    await reservations_beside_inventory(
        make_proxy, idp_server, upstream[1], scope="reservations"
    )

    tokens = {call.headers["Authorization"] for call in upstream[0].calls}
    assert idp.token_requests == 2
    assert len(tokens) == 2
