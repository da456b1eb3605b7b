"""What callers see when something fails, and the proxy's own endpoints."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import (
    Call,
    LogCapture,
    ProxyFactory,
    RecordingUpstream,
    send_raw,
)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def assert_proxy_error(
    response: ClientResponse, status: int, code: str
) -> dict[str, str]:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["detail"]
    return body


async def test_unknown_path_is_404_no_route(make_proxy: ProxyFactory) -> None:
    """A path no upstream owns gets JSON 404, not aiohttp's HTML page."""
    proxy = await make_proxy()

    response = await proxy.get("/nowhere/v1/items")

    await assert_proxy_error(response, 404, "no_route")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("GET", "/tokens/source/refresh", "POST"),
    ],
)
async def test_own_endpoints_answer_other_methods_405_with_allow(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    method: str,
    path: str,
    allow: str,
) -> None:
    """The proxy's own paths refuse other methods and say which they take."""
    proxy = await make_proxy()

    response = await proxy.request(method, path)

    await assert_proxy_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow
    assert upstream[0].calls == []


async def test_prefix_matches_whole_segments_only(make_proxy: ProxyFactory) -> None:
    """``/inventoryx`` is not under ``/inventory``."""
    proxy = await make_proxy()

    response = await proxy.get("/inventoryx/items")

    await assert_proxy_error(response, 404, "no_route")


@pytest.mark.parametrize(
    "path", ["/inventory/../admin", "/inventory/%2e%2e/admin", "/inventory/a%2f..%2fb"]
)
async def test_dot_segments_are_refused_before_any_upstream_call(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    path: str,
) -> None:
    """A path that would climb out of the base URL is a 400 and goes nowhere."""
    proxy = await make_proxy()
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    response = await send_raw(proxy.port, request.encode())

    assert response.status == 400
    assert json.loads(response.body)["error"] == "bad_request"
    assert upstream[0].calls == []


async def test_body_over_the_limit_is_413(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A declared length over max_body_bytes is refused before it is read."""
    proxy = await make_proxy(server={"max_body_bytes": 1024})

    response = await proxy.post("/inventory/x", data=b"x" * 1025)

    await assert_proxy_error(response, 413, "body_too_large")
    assert upstream[0].calls == []


async def test_chunked_body_over_the_limit_is_413(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A chunked body is counted as it arrives and refused past the limit."""
    proxy = await make_proxy(server={"max_body_bytes": 1024})

    async def chunks() -> object:
        for _ in range(4):
            yield b"x" * 512

    response = await proxy.post("/inventory/x", data=chunks())

    await assert_proxy_error(response, 413, "body_too_large")
    assert upstream[0].calls == []


async def test_unreachable_upstream_is_502(
    make_proxy: ProxyFactory, closed_port_url: str
) -> None:
    """A refused connection to the upstream is a 502 upstream_unreachable."""
    proxy = await make_proxy(upstream_url=closed_port_url)

    response = await proxy.get("/inventory/x")

    body = await assert_proxy_error(response, 502, "upstream_unreachable")
    assert "inventory" in body["detail"]


async def test_slow_upstream_is_504(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """An upstream that does not answer within timeout_s gives 504."""
    recorder = upstream[0]

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        await recorder.release.wait()
        return web.Response(text="late")

    recorder.respond = respond
    proxy = await make_proxy(route={"timeout_s": 0.2})

    response = await proxy.get("/inventory/x")

    await assert_proxy_error(response, 504, "upstream_timeout")
    recorder.release.set()


async def test_token_endpoint_down_gives_503_with_retry_after(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    closed_port_url: str,
) -> None:
    """No token means 503 token_unavailable with Retry-After, and no upstream call."""
    proxy = await make_proxy(token_url=f"{closed_port_url}/oauth2/token")

    response = await proxy.get("/inventory/x")

    body = await assert_proxy_error(response, 503, "token_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert "unreachable" in body["detail"]
    assert upstream[0].calls == []


async def test_healthz_answers_while_tokens_fail(
    make_proxy: ProxyFactory, closed_port_url: str
) -> None:
    """Liveness says nothing about tokens: the process is up."""
    proxy = await make_proxy(token_url=f"{closed_port_url}/oauth2/token")

    response = await proxy.get("/healthz")

    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_is_200_once_a_token_is_held(
    make_proxy: ProxyFactory, idp: IdentityProvider
) -> None:
    """Readiness waits briefly for the first token and reports ready."""
    proxy = await make_proxy()

    response = await proxy.get("/readyz")

    assert response.status == 200
    assert await response.json() == {"status": "ready", "token_sources": ["iv"]}
    assert idp.token_requests == 1


async def test_readyz_is_503_naming_the_failing_source(
    make_proxy: ProxyFactory, closed_port_url: str
) -> None:
    """Readiness fails with the source's name and the reason."""
    proxy = await make_proxy(token_url=f"{closed_port_url}/oauth2/token")

    response = await proxy.get("/readyz")

    body = await assert_proxy_error(response, 503, "not_ready")
    assert "iv" in body["detail"]
    assert "unreachable" in body["detail"]


async def test_each_call_writes_one_completed_line(
    make_proxy: ProxyFactory, logs: LogCapture
) -> None:
    """request.completed carries id, upstream, method, path, status and duration."""
    proxy = await make_proxy()

    response = await proxy.post(
        "/inventory/T/v1/availability/network?item=1",
        json={},
        headers={"X-Request-ID": "oms-7"},
    )
    await proxy.get("/healthz")

    [line] = logs.events("request.completed")
    assert response.status == 200
    assert line["request_id"] == "oms-7"
    assert line["upstream"] == "inventory"
    assert line["method"] == "POST"
    assert line["path"] == "/inventory/T/v1/availability/network"
    assert line["status"] == 200
    assert line["replayed"] is False
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"


async def test_failed_token_fetch_is_logged_with_source_and_reason(
    make_proxy: ProxyFactory, closed_port_url: str, logs: LogCapture
) -> None:
    """token.refresh_failed names the source and why, at warning level."""
    proxy = await make_proxy(token_url=f"{closed_port_url}/oauth2/token")

    await proxy.get("/inventory/x")

    [line] = logs.events("token.refresh_failed")
    assert line["source"] == "iv"
    assert "unreachable" in line["reason"]
    assert line["level"] == "warning"


async def test_successful_fetch_is_logged_with_lifetime_and_duration(
    make_proxy: ProxyFactory, logs: LogCapture
) -> None:
    """token.refreshed says which source, how long the token lives, how long it took."""
    proxy = await make_proxy()

    await proxy.get("/inventory/x")
    await asyncio.sleep(0)

    [line] = logs.events("token.refreshed")
    assert line["source"] == "iv"
    assert line["expires_in_s"] == pytest.approx(60, abs=1)
    assert line["fetch_ms"] >= 0


async def test_callers_outside_trusted_networks_are_refused(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Binding wider never serves strangers: others must authenticate first."""
    proxy = await make_proxy(server={"trusted_networks": ["192.0.2.0/24"]})

    response = await proxy.get("/inventory/x")
    probe = await proxy.get("/healthz")

    await assert_proxy_error(response, 401, "unauthenticated")
    assert upstream[0].calls == []
    assert probe.status == 200
