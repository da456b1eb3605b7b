"""Client-credentials requests against a real authorization server, and its faults.

The provider is authlib's server side (``proxy.demo.IdentityProvider``), which
really checks client secrets; the faults come from small handlers that misbehave
the way providers do in production.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.client_auth import client_secret_basic
from proxy.demo.identity_provider import IdentityProvider
from proxy.errors import TokenUnavailable
from proxy.pacing import Backoff
from proxy.source_config import OAuth2SourceConfig
from proxy.token_sources import ClientCredentialsSource, parse_retry_after
from proxy.tokens import TokenFetchError, TokenHolder
from tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    AiohttpServer,
    LogCapture,
    ProxyFactory,
)


def source_config(token_url: str, **overrides: Any) -> OAuth2SourceConfig:
    return OAuth2SourceConfig.model_validate(
        {
            "token_url": token_url,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "timeout_s": 2,
            **overrides,
        }
    )


async def fetch(token_url: str, **overrides: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        source = ClientCredentialsSource(source_config(token_url, **overrides), session)
        return await source.fetch_token()


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_each_client_authentication_method_gets_a_token(
    idp: IdentityProvider, idp_server: TestServer, auth_method: str
) -> None:
    """Basic and post both authenticate, with a secret full of reserved characters."""
    grant = await fetch(
        str(idp_server.make_url("/oauth2/token")), auth_method=auth_method
    )

    assert idp.verify(grant.value)
    assert grant.token_type == "Bearer"
    assert grant.expires_in_s == 60
    assert idp.token_requests == 1


async def test_wrong_secret_is_refused_as_invalid_client(
    idp: IdentityProvider, idp_server: TestServer
) -> None:
    """The provider's invalid_client becomes a fetch error naming the code."""
    with pytest.raises(TokenFetchError) as caught:
        await fetch(
            str(idp_server.make_url("/oauth2/token")), client_secret="not-the-secret"
        )

    assert caught.value.reason == "token endpoint answered 401 invalid_client"
    assert "not-the-secret" not in caught.value.reason
    assert idp.tokens_issued == 0


def test_basic_credentials_are_form_encoded_before_base64() -> None:
    """RFC 6749 §2.3.1: ':' in the secret cannot be mistaken for the separator."""
    header = client_secret_basic("a:b", "c:d+e%f")

    assert header == "Basic YSUzQWI6YyUzQWQlMkJlJTI1Zg=="


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def fault_server(aiohttp_server: AiohttpServer, handler: Handler) -> TestServer:
    app = web.Application()
    app.router.add_post("/oauth2/token", handler)
    return await aiohttp_server(app)


async def test_form_carries_scope_audience_and_extra_parameters(
    aiohttp_server: AiohttpServer,
) -> None:
    """Every configured parameter goes with every request, not only the first."""
    seen: dict[str, str] = {}

    async def capture(request: web.Request) -> web.Response:
        seen.update(await request.post())  # type: ignore[arg-type]
        return web.json_response({"access_token": "t", "token_type": "bearer"})

    server = await fault_server(aiohttp_server, capture)
    config = source_config(
        str(server.make_url("/oauth2/token")),
        scope="inventory",
        audience="https://api.example.com",
        extra_params={"tenant": "T1"},
    )

    forms = []
    async with aiohttp.ClientSession() as session:
        source = ClientCredentialsSource(config, session)
        for _ in range(3):
            await source.fetch_token()
            forms.append(dict(seen))

    assert (
        forms
        == [
            {
                "grant_type": "client_credentials",
                "scope": "inventory",
                "audience": "https://api.example.com",
                "tenant": "T1",
            }
        ]
        * 3
    )


async def test_expires_in_as_a_string_is_accepted(
    aiohttp_server: AiohttpServer,
) -> None:
    """Some providers quote the number; the lifetime is still read."""

    async def quoted(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": "3599"})

    server = await fault_server(aiohttp_server, quoted)

    grant = await fetch(str(server.make_url("/oauth2/token")))

    assert grant.expires_in_s == 3599.0


def test_retry_after_accepts_seconds_and_dates() -> None:
    """Both RFC 9110 forms are read; junk is ignored."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


class Fault:
    """A token endpoint that fails in one way and counts the requests it got."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        if self.kind == "server_error":
            return web.Response(status=500, text="<html>oops</html>")
        if self.kind == "garbage":
            return web.Response(status=200, text="<html>login</html>")
        if self.kind == "no_token":
            return web.json_response({"token_type": "Bearer", "expires_in": 60})
        if self.kind == "rate_limited":
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": "120"}
            )
        if self.kind == "invalid_client":
            return web.json_response({"error": "invalid_client"}, status=401)
        await self.release.wait()  # "slow": never answers within the timeout
        return web.json_response({"access_token": "late"})


FAULTS = {
    "server_error": "token endpoint answered 500",
    "garbage": "token endpoint answered 200 without JSON",
    "no_token": "token endpoint answer has no access_token",
    "rate_limited": "token endpoint answered 429 rate_limited",
    "invalid_client": "token endpoint answered 401 invalid_client",
    "slow": "token endpoint did not answer within 0.3s",
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
async def test_failing_provider_is_asked_once_per_back_off_step(
    aiohttp_server: AiohttpServer,
    make_proxy: ProxyFactory,
    logs: LogCapture,
    kind: str,
) -> None:
    """50 concurrent then 20 sequential calls in one back-off step: one request."""
    fault = Fault(kind)
    server = await fault_server(aiohttp_server, fault.handle)
    proxy = await make_proxy(
        token_url=str(server.make_url("/oauth2/token")),
        source={"timeout_s": 0.3, "backoff_initial_s": 30, "backoff_max_s": 300},
    )

    started = time.perf_counter()
    burst = await asyncio.gather(*(proxy.get("/inventory/x") for _ in range(50)))
    burst_s = time.perf_counter() - started
    started = time.perf_counter()
    sequential = [await proxy.get("/inventory/x") for _ in range(20)]
    sequential_s = time.perf_counter() - started
    fault.release.set()

    responses = [*burst, *sequential]
    assert [response.status for response in responses] == [503] * 70
    for response in responses:
        assert (await response.json())["error"] == "token_unavailable"
        assert int(response.headers["Retry-After"]) >= 15
    assert fault.requests == 1
    [failure] = logs.events("token.refresh_failed")
    assert failure["reason"] == FAULTS[kind]
    print(
        f"{kind}: 50 concurrent failed in {burst_s * 1000:.0f} ms, then 20 in "
        f"{sequential_s * 1000:.0f} ms; {fault.requests} token request"
    )


async def test_unreachable_provider_is_tried_once_per_back_off_step(
    make_proxy: ProxyFactory, logs: LogCapture
) -> None:
    """A provider that refuses connections: 70 calls fail fast after one attempt."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    proxy = await make_proxy(
        token_url=f"http://127.0.0.1:{closed_port}/oauth2/token",
        source={"backoff_initial_s": 30, "backoff_max_s": 300},
    )

    burst = await asyncio.gather(*(proxy.get("/inventory/x") for _ in range(50)))
    sequential = [await proxy.get("/inventory/x") for _ in range(20)]

    statuses = [response.status for response in [*burst, *sequential]]
    assert statuses == [503] * 70
    [failure] = logs.events("token.refresh_failed")
    assert failure["reason"] == "token endpoint unreachable (ClientConnectorError)"


async def test_rate_limited_provider_sets_retry_after_for_callers(
    aiohttp_server: AiohttpServer, make_proxy: ProxyFactory
) -> None:
    """A 429 with Retry-After: 120 gives callers a Retry-After of at least 120."""
    fault = Fault("rate_limited")
    server = await fault_server(aiohttp_server, fault.handle)
    proxy = await make_proxy(token_url=str(server.make_url("/oauth2/token")))

    response = await proxy.get("/inventory/x")

    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 120


async def test_holder_recovers_once_the_secret_is_fixed(
    idp: IdentityProvider, idp_server: TestServer, tmp_path: Path
) -> None:
    """After the back-off step one new attempt is made, with the secret file re-read."""
    secret_file = tmp_path / "client_secret"
    secret_file.write_text("wrong\n")
    config = source_config(
        str(idp_server.make_url("/oauth2/token")),
        client_secret=None,
        client_secret_file=str(secret_file),
    )
    async with aiohttp.ClientSession() as session:
        holder = TokenHolder(
            "iv",
            ClientCredentialsSource(config, session),
            refresh_margin_s=5,
            default_ttl_s=60,
            backoff=Backoff(initial_s=0.05, max_s=0.05),
        )
        with pytest.raises(TokenUnavailable):
            await holder.token()
        secret_file.write_text(CLIENT_SECRET + "\n")
        await asyncio.sleep(0.06)

        token = await holder.token()

    assert idp.verify(token.value)
    assert idp.token_requests == 2
