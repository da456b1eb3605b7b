"""Calm under failure: cold starts, a token budget, and tokens refused when fresh."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import AiohttpServer, LogCapture, ProxyFactory, RecordingUpstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fail_first(
    count: int,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware that answers 503 to the first ``count`` requests."""
    remaining = [count]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if remaining[0] > 0:
            remaining[0] -= 1
            await request.read()
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return await handler(request)

    return middleware


async def test_cold_start_waits_for_the_first_token_across_a_failure(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    aiohttp_server: AiohttpServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """A provider that fails its first answer costs the first call a wait, not a 503."""
    app = idp.build_app()
    app.middlewares.append(fail_first(1))
    flaky = await aiohttp_server(app)
    proxy = await make_proxy(
        token_url=str(flaky.make_url("/oauth2/token")),
        source={
            "cold_start_wait_s": 10,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.2,
        },
    )

    response = await proxy.get("/inventory/x")

    assert response.status == 200
    assert idp.token_requests == 1
    assert upstream[0].calls[0].authorized


async def test_cold_start_gives_up_when_the_next_attempt_is_past_the_wait(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer, idp: IdentityProvider
) -> None:
    """The wait is bounded: a back-off longer than cold_start_wait_s fails at once."""
    app = idp.build_app()
    app.middlewares.append(fail_first(100))
    down = await aiohttp_server(app)
    proxy = await make_proxy(
        token_url=str(down.make_url("/oauth2/token")),
        source={"cold_start_wait_s": 1, "backoff_initial_s": 60},
    )

    response = await proxy.get("/inventory/x")

    assert response.status == 503
    assert (await response.json())["error"] == "token_unavailable"


async def test_token_budget_caps_requests_however_many_refusals(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """With a budget of 3 per hour, revocations past it give 503, not more requests."""
    proxy = await make_proxy(source={"max_token_requests_per_hour": 3})

    statuses = []
    for _ in range(6):
        idp.revoke()
        statuses.append((await proxy.get("/inventory/x")).status)

    assert idp.token_requests == 3
    assert statuses[:2] == [200, 200]
    assert statuses[-1] == 503
    exhausted = logs.events("token.budget_exhausted")
    assert len(exhausted) == 1
    assert exhausted[0]["level"] == "error"
    assert exhausted[0]["max_requests_per_hour"] == 3


async def test_token_refused_when_fresh_is_reported_once_and_not_refetched(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A scope the upstream rejects: one replay, one error line, then no loop."""
    recorder, _ = upstream
    recorder.always_unauthorized = True
    proxy = await make_proxy()

    statuses = [(await proxy.get("/inventory/x")).status for _ in range(10)]

    assert statuses == [401] * 10
    assert idp.token_requests == 2
    assert len(recorder.calls) == 11
    [report] = logs.events("token.refused_when_fresh")
    assert report["level"] == "error"
    assert report["source"] == "iv"
    assert report["www_authenticate"] == 'Bearer error="invalid_token"'
