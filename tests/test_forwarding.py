"""Calls through the proxy to a real upstream, with tokens from a real provider."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import (
    Call,
    LogCapture,
    ProxyFactory,
    RecordingUpstream,
    send_raw,
)

AVAILABILITY = {
    "distributionGroupId": "DG_ONLINE",
    "lines": [
        {
            "lineId": "1",
            "itemId": "SKU-1024",
            "unitOfMeasure": "EACH",
            "productClass": "NEW",
            "deliveryMethod": "SHP",
        }
    ],
}


async def test_post_reaches_the_upstream_with_a_bearer_token(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Method, path, query and body go through and the token is attached."""
    proxy = await make_proxy()

    path_qs = "/inventory/TENANT/v1/availability/network?x=1&x=%2B+2&empty="

    response = await proxy.post(path_qs, json=AVAILABILITY)

    recorder, _ = upstream
    assert response.status == 200
    [call] = recorder.calls
    assert call.authorized
    assert call.method == "POST"
    assert (
        call.path_qs == "/inventory/TENANT/v1/availability/network?x=1&x=%2B+2&empty="
    )
    assert json.loads(call.body) == AVAILABILITY


async def test_cold_start_burst_makes_one_token_request(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """500 concurrent calls before any token exists cause one token request."""
    proxy = await make_proxy()

    responses = await asyncio.gather(
        *(proxy.get(f"/inventory/TENANT/v1/items/{n}") for n in range(500))
    )

    assert [response.status for response in responses] == [200] * 500
    assert idp.token_requests == 1
    assert len(upstream[0].calls) == 500


async def test_token_is_reused_across_calls(
    make_proxy: ProxyFactory, idp: IdentityProvider
) -> None:
    """Sequential calls within a token's life share it: no token per call."""
    proxy = await make_proxy()

    statuses = [
        (await proxy.get("/inventory/TENANT/v1/items/1")).status for _ in range(20)
    ]

    assert statuses == [200] * 20
    assert idp.token_requests == 1


async def test_revoked_token_is_replaced_once_for_concurrent_calls(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A hundred calls refused with one token share one refresh and each replays."""
    proxy = await make_proxy()
    assert (await proxy.get("/inventory/warm")).status == 200
    idp.revoke()

    responses = await asyncio.gather(
        *(proxy.get(f"/inventory/TENANT/v1/items/{n}") for n in range(100))
    )

    assert [response.status for response in responses] == [200] * 100
    assert idp.token_requests == 2
    replayed = [e for e in logs.events("request.completed") if e["replayed"]]
    assert len(replayed) == 100
    refused = [call for call in upstream[0].calls if not call.authorized]
    assert len(refused) == 100


async def test_one_mebibyte_post_is_replayed_intact_after_a_401(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """The body sent again after a refresh is the same bytes as the first time."""
    proxy = await make_proxy()
    assert (await proxy.get("/inventory/warm")).status == 200
    idp.revoke()
    body = bytes(range(256)) * 4096

    response = await proxy.post("/inventory/TENANT/v1/reservations", data=body)

    assert response.status == 200
    refused, accepted = upstream[0].calls[-2:]
    assert not refused.authorized
    assert accepted.authorized
    expected = hashlib.sha256(body).hexdigest()
    assert refused.body_sha256 == accepted.body_sha256 == expected


async def test_refusal_of_the_fresh_token_passes_through_without_a_loop(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """When the replay is refused too, the upstream's 401 reaches the caller."""
    recorder, _ = upstream
    recorder.always_unauthorized = True
    proxy = await make_proxy()

    response = await proxy.post("/inventory/TENANT/v1/reservations", json={})

    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(recorder.calls) == 2
    assert idp.token_requests == 2
    [warning] = logs.events("upstream.token_rejected")
    assert warning["level"] == "warning"
    assert warning["upstream"] == "inventory"


async def test_hop_by_hop_headers_are_dropped_on_the_way_up(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Connection, the headers it names, Keep-Alive, TE, Upgrade, Proxy-* stay here."""
    proxy = await make_proxy()

    await proxy.get(
        "/inventory/x",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "Proxy-Authorization": "Basic cHJveHk6cHJveHk=",
            "X-End-To-End": "kept",
        },
    )

    [call] = upstream[0].calls
    for name in ("X-Hop", "Keep-Alive", "TE", "Trailer", "Upgrade"):
        assert name not in call.headers, name
    assert "Proxy-Authorization" not in call.headers
    assert call.headers["X-End-To-End"] == "kept"


async def test_hop_by_hop_headers_are_dropped_on_the_way_back(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """The upstream's own hop-by-hop headers never reach the caller."""

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Upstream-Hop",
                "X-Upstream-Hop": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-Kept": "yes",
            },
        )

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.get("/inventory/x")

    assert response.status == 200
    for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in response.headers, name
    assert response.headers["X-Kept"] == "yes"


async def test_callers_authorization_is_replaced_by_the_token(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Whatever Authorization the caller sends, the upstream sees only the token."""
    proxy = await make_proxy()

    await proxy.get("/inventory/x", headers={"Authorization": "Bearer caller-own"})

    [call] = upstream[0].calls
    assert call.authorized
    assert "caller-own" not in call.headers["Authorization"]


async def test_forwarding_headers_and_request_id_are_set(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """X-Forwarded-* describe the caller; X-Request-ID and traceparent travel on."""
    proxy = await make_proxy()

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    response = await proxy.get(
        "/inventory/x",
        headers={
            "X-Request-ID": "oms-42",
            "X-Forwarded-For": "203.0.113.9",
            "traceparent": traceparent,
        },
    )

    [call] = upstream[0].calls
    assert call.headers["X-Forwarded-For"] == "127.0.0.1"
    assert call.headers["X-Forwarded-Proto"] == "http"
    assert call.headers["X-Forwarded-Host"] == f"127.0.0.1:{proxy.port}"
    assert call.headers["X-Request-ID"] == "oms-42"
    assert call.headers["traceparent"] == traceparent
    assert response.headers["X-Request-ID"] == "oms-42"


async def test_request_id_is_generated_when_the_caller_sends_none(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Each call gets an id that the upstream, the caller and the log line share."""
    proxy = await make_proxy()

    response = await proxy.get("/inventory/x")

    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert upstream[0].calls[0].headers["X-Request-ID"] == request_id


async def test_proxy_adds_no_headers_the_caller_did_not_send(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """No Accept-Encoding, User-Agent or cookies appear on the caller's behalf."""
    proxy = await make_proxy()

    await proxy.get(
        "/inventory/x", skip_auto_headers=("Accept-Encoding", "Accept", "User-Agent")
    )

    [call] = upstream[0].calls
    for name in ("Accept-Encoding", "Accept", "User-Agent", "Cookie"):
        assert name not in call.headers, name


async def test_caller_headers_arrive_as_sent_with_the_upstream_host(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Repeated headers keep every value, in order, whatever the case of their names.

    Only Host changes: the upstream's replaces the caller's, and comes first. Sent
    raw, since a client would tidy the repeats up before they left.
    """
    proxy = await make_proxy()
    request = (
        "GET /inventory/x HTTP/1.1\r\n"
        "Host: oms.example\r\n"
        "X-Tenant: EU\r\n"
        "x-tenant: DE\r\n"
        "X-Channel: store\r\n"
        "X-TENANT: FR\r\n"
        "Connection: close\r\n\r\n"
    )

    response = await send_raw(proxy.port, request.encode())

    assert response.status == 200
    [call] = upstream[0].calls
    _, server = upstream
    assert call.headers.getall("X-Tenant") == ["EU", "DE", "FR"]
    assert call.headers.getall("X-Channel") == ["store"]
    assert call.headers.getall("Host") == [f"{server.host}:{server.port}"]
    assert next(iter(call.headers)) == "Host"
    for name in ("Content-Type", "Accept", "Accept-Encoding", "User-Agent"):
        assert name not in call.headers, name


async def test_compressed_bodies_pass_through_untouched(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A gzip answer reaches the caller as the same gzip bytes."""
    packed = gzip.compress(json.dumps({"lines": []}).encode())

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        return web.Response(
            body=packed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.get("/inventory/x", headers={"Accept-Encoding": "gzip"})

    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == packed


async def test_redirects_are_passed_back_not_followed(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A 302 reaches the caller as it is, and the token goes nowhere else."""

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://127.0.0.2/x"})

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.get("/inventory/x", allow_redirects=False)

    assert response.status == 302
    assert response.headers["Location"] == "http://127.0.0.2/x"
    assert len(upstream[0].calls) == 1


async def test_upstream_status_and_body_pass_through(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """An upstream's own 400 is not rewritten into a proxy error."""
    vendor_error = {
        "error_message": "Number of actions in input (310) is greater than the "
        "tenant limit of 100."
    }

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        return web.json_response(vendor_error, status=400)

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.post("/inventory/TENANT/v1/availability/network", json={})

    assert response.status == 400
    assert await response.json() == vendor_error


async def test_cookies_from_one_call_never_reach_another(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """The proxy keeps no cookie jar: a Set-Cookie passes back and is forgotten."""

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        response = web.Response(text="ok")
        response.set_cookie("session", "abc")
        return response

    upstream[0].respond = respond
    proxy = await make_proxy()

    first = await proxy.get("/inventory/a")
    proxy.session.cookie_jar.clear()
    await proxy.get("/inventory/b")

    assert "session=abc" in first.headers["Set-Cookie"]
    assert "Cookie" not in upstream[0].calls[1].headers


async def test_large_response_streams_back_complete(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A multi-megabyte chunked answer arrives whole and in order."""
    payload = bytes(range(256)) * 16384

    async def respond(request: web.Request, _call: Call) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(payload), 100_000):
            await response.write(payload[start : start + 100_000])
        await response.write_eof()
        return response

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.get("/inventory/export")

    assert response.status == 200
    assert await response.read() == payload


async def test_upstream_breaking_off_mid_body_is_not_passed_off_as_complete(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A chunked answer cut short upstream reaches the caller as a broken body."""

    async def respond(request: web.Request, _call: Call) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 100_000)
        assert request.transport is not None
        request.transport.close()
        return response

    upstream[0].respond = respond
    proxy = await make_proxy()

    response = await proxy.get("/inventory/export")

    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    [warning] = logs.events("upstream.body_interrupted")
    assert warning["request_id"] == response.headers["X-Request-ID"]


async def test_head_and_no_content_answers_pass_through(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """HEAD keeps the upstream's headers without a body; 204 stays empty."""

    async def respond(request: web.Request, _call: Call) -> web.Response:
        if request.method == "HEAD":
            return web.Response(body=b"x" * 42, headers={"ETag": '"v1"'})
        return web.Response(status=204)

    upstream[0].respond = respond
    proxy = await make_proxy()

    head = await proxy.head("/inventory/items/1")
    empty = await proxy.delete("/inventory/reservations/1")

    assert head.status == 200
    assert head.headers["ETag"] == '"v1"'
    assert head.headers["Content-Length"] == "42"
    assert await head.read() == b""
    assert empty.status == 204
    assert await empty.read() == b""


async def test_tokens_are_renewed_ahead_of_expiry_without_a_refused_call(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """Over several short token lifetimes, no call is ever sent with a dead token."""
    idp.token_lifetime_s = 3
    proxy = await make_proxy(source={"refresh_margin_s": 2})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 7.0

    statuses = []
    while loop.time() < deadline:
        statuses.append((await proxy.get("/inventory/items/1")).status)
        await asyncio.sleep(0.02)

    assert set(statuses) == {200}
    assert idp.token_requests >= 3
    assert [call for call in upstream[0].calls if not call.authorized] == []
    assert not any(line["replayed"] for line in logs.events("request.completed"))


async def test_body_cut_short_of_its_content_length_goes_nowhere(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A caller that hangs up mid-body sends nothing upstream and fails nothing."""
    proxy = await make_proxy()
    assert proxy.port is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /inventory/availability HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"lines": ['
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    for _ in range(1000):  # the proxy notices the hang-up on its own time; 10 s
        if logs.events("request.completed"):
            break
        await asyncio.sleep(0.01)
    [completed] = logs.events("request.completed")
    assert completed["status"] == 400
    assert logs.events("request.failed") == []
    assert upstream[0].calls == []
