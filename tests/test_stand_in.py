"""Stand-in tokens: an OMS's own token requests are answered by the proxy."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import ProxyFactory, RecordingUpstream

STAND_IN = {"stand_in_token_path": "/*/v1/oauth2/token"}


async def test_oms_token_request_is_answered_locally(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """The OMS gets a long-lived stand-in; nothing reaches the upstream or the IdP."""
    proxy = await make_proxy(route=STAND_IN)

    response = await proxy.post(
        "/inventory/TENANT/v1/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic b21zOm9tcy1zZWNyZXQ="},
    )

    body = await response.json()
    assert response.status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 43200
    assert body["access_token"].startswith("stand-in.")
    assert response.headers["Cache-Control"] == "no-store"
    assert upstream[0].calls == []
    assert not idp.verify(body["access_token"])


async def test_calls_with_the_stand_in_carry_the_real_token(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """The stand-in never leaves the proxy: the upstream sees the provider's token."""
    proxy = await make_proxy(route=STAND_IN)
    answer = await proxy.post("/inventory/T/v1/oauth2/token", data={})
    stand_in = (await answer.json())["access_token"]

    response = await proxy.post(
        "/inventory/T/v1/availability/network",
        json={"lines": []},
        headers={"Authorization": f"Bearer {stand_in}"},
    )

    [call] = upstream[0].calls
    assert response.status == 200
    assert call.authorized
    assert stand_in not in call.headers["Authorization"]


async def test_many_oms_instances_look_like_one_client_to_the_provider(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Twenty OMS instances fetching tokens and calling cause one token request."""
    proxy = await make_proxy(route=STAND_IN)

    async def oms_instance(n: int) -> int:
        await proxy.post(f"/inventory/T{n % 2}/v1/oauth2/token", data={})
        response = await proxy.get(f"/inventory/T{n % 2}/v1/items/{n}")
        return response.status

    statuses = await asyncio.gather(*(oms_instance(n) for n in range(20)))

    assert statuses == [200] * 20
    assert idp.token_requests == 1
    assert len(upstream[0].calls) == 20


async def test_only_paths_matching_the_pattern_are_answered(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """``*`` is one segment: deeper or different paths are forwarded as usual."""
    proxy = await make_proxy(route=STAND_IN)

    deeper = await proxy.post("/inventory/a/b/v1/oauth2/token", data={})
    other = await proxy.post("/inventory/T/v1/oauth2/tokens", data={})

    assert deeper.status == other.status == 200
    assert [call.path_qs for call in upstream[0].calls] == [
        "/inventory/a/b/v1/oauth2/token",
        "/inventory/T/v1/oauth2/tokens",
    ]


async def test_stand_in_endpoint_takes_post_only(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A GET to the token path is a JSON 405 and goes nowhere."""
    proxy = await make_proxy(route=STAND_IN)

    response = await proxy.get("/inventory/T/v1/oauth2/token")

    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"] == "method_not_allowed"
    assert upstream[0].calls == []


async def test_without_the_setting_token_requests_are_forwarded(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Stand-in tokens are opt-in per upstream."""
    proxy = await make_proxy()

    await proxy.post("/inventory/T/v1/oauth2/token", data={})

    assert [call.path_qs for call in upstream[0].calls] == [
        "/inventory/T/v1/oauth2/token"
    ]
