"""Hostile requests at the proxy's port: each is refused and no upstream hears of it.

Every attack goes over a raw socket on 127.0.0.1, because HTTP clients tidy up
exactly the bytes under test. Rows whose ids start with ``parser-`` are refused by
aiohttp's parser before the handler runs (``proxy.http_server`` answers them); the
rest by ``proxy.request_hygiene`` in the handler. Both answer with the proxy's JSON
error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from aiohttp import http_parser
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy.errors import BadRequest
from proxy.request_hygiene import (
    SERVER_LIMITS,
    check_message_framing,
    check_request_target,
)
from proxy.server import ProxyServer
from tests.conftest import (
    LogCapture,
    ProxyFactory,
    RawResponse,
    RecordingUpstream,
    proxy_config,
    send_raw,
)

# Who refuses: the proxy's checks, aiohttp's parser, or either (by parser build).
Answer = Literal["proxy", "parser", "either"]

MAX_BODY_BYTES = 1024
LLHTTP = http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy


def get(target: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    return b"%s %s %s\r\nHost: proxy\r\nConnection: close\r\n\r\n" % (
        method,
        target,
        version,
    )


def post(headers: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /inventory/x %s\r\nHost: proxy\r\nConnection: close\r\n%s\r\n%s" % (
        version,
        headers,
        body,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def with_headers(count: int) -> bytes:
    extra = b"".join(b"X-H%d: 1\r\n" % index for index in range(count - 1))
    return (
        b"GET /inventory/x HTTP/1.1\r\nHost: proxy\r\n%sConnection: close\r\n\r\n"
        % extra
    )


def row(
    row_id: str,
    request: bytes,
    status: int,
    answer: Answer,
    *marks: pytest.MarkDecorator,
) -> object:
    prefix = "parser-" if answer == "parser" else ""
    return pytest.param(request, status, answer, id=prefix + row_id, marks=marks)


PATH_ESCAPES = [
    row("dot-dot", get(b"/inventory/../admin"), 400, "proxy"),
    row("dot", get(b"/inventory/./admin"), 400, "proxy"),
    row("encoded-dot-dot", get(b"/inventory/%2e%2e/admin"), 400, "proxy"),
    row("mixed-case-encoded", get(b"/inventory/%2E%2e/admin"), 400, "proxy"),
    row("half-encoded", get(b"/inventory/.%2E/admin"), 400, "proxy"),
    row("encoded-slashes", get(b"/inventory/a%2f..%2fadmin"), 400, "proxy"),
    row("double-encoded", get(b"/inventory/%252e%252e/admin"), 400, "proxy"),
    row("triple-encoded", get(b"/inventory/%25252e%25252e/admin"), 400, "proxy"),
    row("encoded-four-times", get(b"/inventory/%2525252e/admin"), 400, "proxy"),
    row("backslash", get(b"/inventory/..\\admin"), 400, "proxy"),
    row("encoded-backslash", get(b"/inventory/..%5cadmin"), 400, "proxy"),
    row("double-slash", get(b"/inventory//admin"), 400, "proxy"),
    row("leading-double-slash", get(b"//inventory/x"), 400, "proxy"),
    row("encoded-double-slash", get(b"/inventory/a%2F%2Fadmin"), 400, "proxy"),
    row("dot-dot-params", get(b"/inventory/..;x=1/admin"), 400, "proxy"),
    row("params-only-segment", get(b"/inventory/;x/admin"), 400, "proxy"),
    row("fullwidth-dots", get(b"/inventory/%EF%BC%8E%EF%BC%8E/admin"), 400, "proxy"),
    row("encoded-nul", get(b"/inventory/a%00b"), 400, "proxy"),
    # Today aiohttp's router answers 404: "/{tail:.*}" stops at a decoded newline.
    row(
        "encoded-crlf",
        get(b"/inventory/a%0d%0aX-Evil:%201"),
        400,
        "proxy",
    ),
    row("encoded-c1-control", get(b"/inventory/a%C2%85b"), 400, "proxy"),
    row("bad-percent", get(b"/inventory/a%zz"), 400, "proxy"),
    row("fragment", get(b"/inventory/a#/../../admin"), 400, "proxy"),
    row("raw-nul", get(b"/inventory/a\x00b"), 400, "parser"),
    row("raw-tab", get(b"/inventory/a\tb"), 400, "parser"),
    # llhttp refuses raw UTF-8 itself; the pure-Python parser lets the proxy do it.
    row("raw-non-ascii", get("/inventory/café".encode()), 400, "either"),
]

TARGET_FORMS = [
    row("absolute-form", get(b"http://elsewhere/inventory/x"), 400, "proxy"),
    row("absolute-form-https", get(b"https://elsewhere:8443/x?y=1"), 400, "proxy"),
    row(
        "absolute-form-own-endpoint",
        get(b"http://elsewhere/healthz"),
        400,
        "proxy",
    ),
    row("authority-form", get(b"elsewhere:443"), 400, "parser"),
    row(
        "connect",
        get(b"elsewhere:443", method=b"CONNECT"),
        400,
        "proxy",
    ),
    row(
        "connect-origin-form",
        get(b"/inventory/x", method=b"CONNECT"),
        400,
        "proxy",
    ),
    row("asterisk-form", get(b"*", method=b"OPTIONS"), 400, "proxy"),
]

CHUNKED = b"Transfer-Encoding: chunked\r\n"
SMUGGLING = [
    row(
        "content-length-and-chunked",
        post(b"Content-Length: 6\r\n" + CHUNKED, b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row(
        "chunked-and-content-length",
        post(CHUNKED + b"Content-Length: 6\r\n", b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row(
        "two-content-lengths",
        post(b"Content-Length: 3\r\nContent-Length: 5\r\n", b"abcde"),
        400,
        "parser",
    ),
    row(
        "content-length-list", post(b"Content-Length: 3, 3\r\n", b"abc"), 400, "parser"
    ),
    row(
        "content-length-signed", post(b"Content-Length: +3\r\n", b"abc"), 400, "parser"
    ),
    row("chunk-size-not-hex", post(CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n"), 400, "parser"),
    row("chunk-size-negative", post(CHUNKED, b"-3\r\nabc\r\n0\r\n\r\n"), 400, "parser"),
    row("chunk-size-0x", post(CHUNKED, b"0x3\r\nabc\r\n0\r\n\r\n"), 400, "parser"),
    row(
        "chunk-size-overflow",
        post(CHUNKED, b"1" + b"0" * 17 + b"\r\nabc\r\n0\r\n\r\n"),
        400,
        "parser",
        pytest.mark.skipif(
            not LLHTTP, reason="the pure-Python parser waits for 2**68 bytes instead"
        ),
    ),
    row("chunk-bare-lf", post(CHUNKED, b"3\nabc\n0\n\n"), 400, "parser"),
    row(
        "obs-fold-space",
        get(b"/inventory/x").replace(b"Connection", b"X-A: 1\r\n folded\r\nConnection"),
        400,
        "parser",
    ),
    row(
        "obs-fold-tab",
        get(b"/inventory/x").replace(
            b"Connection", b"X-A: 1\r\n\tfolded\r\nConnection"
        ),
        400,
        "parser",
    ),
    row(
        "obs-fold-transfer-encoding",
        post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row("te-gzip", post(b"Transfer-Encoding: gzip\r\n", b"abc"), 400, "parser"),
    row(
        "te-identity-with-length",
        post(b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n", b"abc"),
        400,
        "parser",
    ),
    row(
        "te-chunked-then-gzip",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row(
        "te-gzip-then-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        400,
        "proxy",
    ),
    row(
        "te-xchunked",
        post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row("te-twice", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400, "parser"),
    row(
        "te-on-http-1.0",
        post(CHUNKED, b"0\r\n\r\n", version=b"HTTP/1.0"),
        400,
        "proxy",
    ),
    row(
        "space-before-colon",
        post(b"Content-Length : 3\r\n", b"abc"),
        400,
        "parser",
    ),
    row(
        "space-before-colon-te",
        post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        400,
        "parser",
    ),
    row("bare-lf", b"GET /inventory/x HTTP/1.1\nHost: proxy\n\n", 400, "parser"),
    row(
        "bare-lf-in-headers",
        b"GET /inventory/x HTTP/1.1\r\nHost: proxy\nX-A: 1\r\n\r\n",
        400,
        "parser",
    ),
    row(
        "bare-cr-in-headers",
        b"GET /inventory/x HTTP/1.1\r\nHost: proxy\rX-A: 1\r\n\r\n",
        400,
        "parser",
    ),
    row(
        "two-hosts",
        get(b"/inventory/x").replace(b"Connection", b"Host: elsewhere\r\nConnection"),
        400,
        "parser",
    ),
    row(
        "http-0.9",
        b"GET /inventory/x\r\n\r\n",
        400,
        "either",
    ),
    row(
        "http-2.0-text",
        get(b"/inventory/x", version=b"HTTP/2.0"),
        400,
        "proxy",
    ),
]

LIMITS = [
    row(
        "request-line-over-limit",
        get(b"/inventory/" + b"a" * SERVER_LIMITS["max_line_size"]),
        400,
        "parser",
    ),
    row(
        "header-over-limit",
        get(b"/inventory/x").replace(
            b"Connection",
            b"X-A: " + b"a" * (SERVER_LIMITS["max_field_size"] + 1) + b"\r\nConnection",
        ),
        400,
        "parser",
    ),
    row(
        "too-many-headers",
        with_headers(SERVER_LIMITS["max_headers"] + 1),
        400,
        "parser",
    ),
    row(
        "body-length-over-limit",
        post(
            b"Content-Length: %d\r\n" % (MAX_BODY_BYTES + 1),
            b"x" * (MAX_BODY_BYTES + 1),
        ),
        413,
        "proxy",
    ),
    row(
        "chunked-body-over-limit",
        post(CHUNKED, chunk(b"x" * 600) + chunk(b"x" * 600) + b"0\r\n\r\n"),
        413,
        "proxy",
    ),
]


@pytest.fixture
async def proxy_server(
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> AsyncIterator[ProxyServer]:
    """The proxy as ``inventory-proxy serve`` runs it, with ``SERVER_LIMITS``."""
    config = proxy_config(
        str(idp_server.make_url("/oauth2/token")),
        str(upstream[1].make_url("/inventory")),
        server={"max_body_bytes": MAX_BODY_BYTES},
    )
    async with ProxyServer(config, port=0) as server:
        yield server


def assert_refused(response: RawResponse, status: int, answer: Answer) -> None:
    assert response.status == status, response.head + response.body.decode("latin-1")
    assert "application/json" in response.head.lower(), answer
    body = json.loads(response.body)
    code = {400: "bad_request", 413: "body_too_large"}[status]
    assert body["error"] == code
    assert body["detail"]
    assert body["request_id"]
    assert f"x-request-id: {body['request_id']}" in response.head.lower()


@pytest.mark.parametrize(
    ("request_bytes", "status", "answer"),
    PATH_ESCAPES + TARGET_FORMS + SMUGGLING + LIMITS,
)
async def test_attack_is_refused_before_any_upstream_call(
    proxy_server: ProxyServer,
    upstream: tuple[RecordingUpstream, TestServer],
    request_bytes: bytes,
    status: int,
    answer: Answer,
) -> None:
    """The attack gets its 4xx and the upstream records no call at all."""
    assert proxy_server.port is not None

    response = await send_raw(proxy_server.port, request_bytes, timeout_s=5.0)

    assert_refused(response, status, answer)
    assert upstream[0].calls == []


@pytest.mark.parametrize(
    "target",
    [
        "/inventory/T/v1/items/SKU%2B1?x=a%20b&x=c",
        "/inventory/T/v1/search?q=red%2Bblue+green&a=1&a=2&&flag",
        "/inventory/T/v1/items/a%2Fb",
        "/inventory/T/v1/items/%C3%A9t%C3%A9;v=1",
        "/inventory/T/v1/items/100%25",
        "/inventory/T/v1/items/a...b/.well-known",
        "/inventory/T/v1/items/",
        "/inventory/T/v1/files?path=../../x&y=%2e%2e&z=%00",
        "/inventory",
    ],
)
async def test_odd_but_valid_target_reaches_the_upstream_byte_for_byte(
    proxy_server: ProxyServer,
    upstream: tuple[RecordingUpstream, TestServer],
    target: str,
) -> None:
    """Encoded bytes, ``+``, repeated keys and dotted names pass through untouched."""
    assert proxy_server.port is not None

    response = await send_raw(proxy_server.port, get(target.encode()), timeout_s=5.0)

    assert response.status == 200
    assert [call.path_qs for call in upstream[0].calls] == [target]


async def test_chunked_body_reaches_the_upstream_whole(
    proxy_server: ProxyServer, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A plainly chunked body, coding name in any case, is forwarded as sent."""
    assert proxy_server.port is not None
    body = chunk(b"abc") + chunk(b"defg") + b"0\r\n\r\n"

    response = await send_raw(
        proxy_server.port, post(b"Transfer-Encoding: Chunked\r\n", body), timeout_s=5.0
    )

    assert response.status == 200
    assert [call.body for call in upstream[0].calls] == [b"abcdefg"]


async def test_served_app_carries_the_header_limits(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """The proxy as tests serve it refuses one header over ``max_headers``."""
    proxy = await make_proxy()
    assert proxy.port is not None

    response = await send_raw(
        proxy.port, with_headers(SERVER_LIMITS["max_headers"] + 1), timeout_s=5.0
    )

    assert response.status == 400
    assert upstream[0].calls == []


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("CONNECT", "elsewhere:443"),
        ("CONNECT", "/inventory/x"),
        ("OPTIONS", "*"),
        ("GET", "http://elsewhere/healthz"),
        ("GET", "elsewhere:443"),
        ("GET", ""),
        ("GET", "?x=1"),
        ("GET", "/inventory/x?q=a b"),
        ("GET", "/inventory/x?q=#"),
    ],
)
def test_non_origin_targets_are_bad_requests(method: str, target: str) -> None:
    """Only ``/path?query`` is served; tunnels, other hosts and ``*`` are 400s."""
    with pytest.raises(BadRequest) as caught:
        check_request_target(method, target)

    assert caught.value.detail.isascii()


@pytest.mark.parametrize(
    ("version", "headers"),
    [
        pytest.param((0, 9), {}, id="http-0.9"),
        pytest.param((2, 0), {}, id="http-2.0"),
        pytest.param((1, 0), {"Transfer-Encoding": "chunked"}, id="te-on-1.0"),
        pytest.param((1, 1), {"Transfer-Encoding": "gzip, chunked"}, id="te-gzip"),
        pytest.param((1, 1), {"Transfer-Encoding": "chunked, chunked"}, id="te-2x"),
        pytest.param(
            (1, 1),
            {"Transfer-Encoding": "chunked", "Content-Length": "0"},
            id="te-and-length",
        ),
        pytest.param((1, 1), {"Content-Length": "-1"}, id="negative-length"),
        pytest.param((1, 1), {"Content-Length": "\u0661"}, id="arabic-digit"),
    ],
)
def test_ambiguous_framing_is_a_bad_request(
    version: tuple[int, int], headers: dict[str, str]
) -> None:
    """Versions other than 1.0 and 1.1 and any framing but one plain reading fail."""
    with pytest.raises(BadRequest):
        check_message_framing(version, CIMultiDict(headers))


def test_repeated_content_length_is_a_bad_request() -> None:
    """Two Content-Length fields are refused even when they agree."""
    headers = CIMultiDict([("Content-Length", "3"), ("Content-Length", "3")])

    with pytest.raises(BadRequest):
        check_message_framing((1, 1), headers)


@pytest.mark.parametrize(
    ("version", "headers"),
    [
        pytest.param((1, 1), {}, id="no-body"),
        pytest.param((1, 0), {"Content-Length": "3"}, id="length-on-1.0"),
        pytest.param((1, 1), {"Transfer-Encoding": " Chunked "}, id="chunked"),
        pytest.param((1, 1), {"Content-Length": "0"}, id="zero-length"),
    ],
)
def test_plain_framing_passes(
    version: tuple[int, int], headers: dict[str, str]
) -> None:
    """One Content-Length, or chunked alone on HTTP/1.1, is accepted."""
    check_message_framing(version, CIMultiDict(headers))


async def test_malformed_request_is_logged_without_its_bytes(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """The parser's error is one request.malformed line and a JSON 400 with the same
    request id; the credential is in neither."""
    proxy = await make_proxy()
    assert proxy.port is not None
    secret = b"Bearer partner-credential-8d1e"

    response = await send_raw(
        proxy.port,
        b"GET /inventory/x HTTP/1.1\r\nHost: proxy\r\nAuthorization: %s\r\n"
        b" folded\r\nConnection: close\r\n\r\n" % secret,
        timeout_s=5.0,
    )

    assert response.status == 400
    assert upstream[0].calls == []
    [line] = logs.events("request.malformed")
    assert line["level"] == "warning"
    assert secret.decode() not in logs.text
    body = json.loads(response.body)
    assert body["error"] == "bad_request"
    assert body["request_id"] == line["request_id"]
    assert secret not in response.body
