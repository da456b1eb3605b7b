"""How calls fare over pooled upstream connections that break or stall.

The upstream here is a raw asyncio server, so that it can do what a well-behaved
HTTP server never does on cue: drop a kept-alive connection as the next call
arrives, stop halfway through a body, or answer with bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import ProxyFactory
from tests.test_errors_and_health import assert_proxy_error

ANSWER = b'{"available":12}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
)


@dataclass(frozen=True)
class Stalled:
    """Send ``sent`` (a head and part of its body), then hold the connection."""

    sent: bytes


# What the upstream does with the n-th request (from 1) on one connection: answer
# with these bytes, close the connection without a word (None), or stall.
Behaviour = Callable[[int], bytes | Stalled | None]


@dataclass
class RawUpstream:
    """Records the requests it reads, and answers each as ``behaviour`` says."""

    behaviour: Behaviour
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            for number in itertools.count(1):
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                reply = self.behaviour(number)
                if reply is None:
                    return
                if isinstance(reply, Stalled):
                    writer.write(reply.sent)
                    await self.released.wait()
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value)
    return 0


StartUpstream = Callable[[Behaviour], Awaitable[tuple[str, RawUpstream]]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[StartUpstream]:
    """Starts raw upstreams on 127.0.0.1 (URL and recorder); stops them after."""
    servers: list[tuple[asyncio.Server, RawUpstream]] = []

    async def start(behaviour: Behaviour) -> tuple[str, RawUpstream]:
        upstream = RawUpstream(behaviour)
        server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        servers.append((server, upstream))
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/inventory", upstream

    yield start
    for server, upstream in servers:
        upstream.released.set()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def _first_only(number: int) -> bytes | None:
    """Answer a connection's first request; drop it when the next arrives."""
    return OK if number == 1 else None


async def test_a_lookup_on_a_dropped_pooled_connection_is_sent_once_more(
    make_proxy: ProxyFactory, raw_upstream: StartUpstream
) -> None:
    """A GET whose kept-alive connection the upstream closed goes out again, once."""
    url, upstream = await raw_upstream(_first_only)
    proxy = await make_proxy(upstream_url=url)

    first = await proxy.get("/inventory/items/1")
    second = await proxy.get("/inventory/items/2")

    assert (first.status, await first.read()) == (200, ANSWER)
    assert (second.status, await second.read()) == (200, ANSWER)
    assert upstream.connections == 2
    paths = [request.split(b" ", 2)[1] for request in upstream.requests]
    assert paths == [
        b"/inventory/items/1",
        b"/inventory/items/2",
        b"/inventory/items/2",
    ]


async def test_a_post_on_a_dropped_pooled_connection_is_not_sent_again(
    make_proxy: ProxyFactory, raw_upstream: StartUpstream
) -> None:
    """A POST may have been acted on, so a dropped connection is a 502, not a resend."""
    url, upstream = await raw_upstream(_first_only)
    proxy = await make_proxy(upstream_url=url)

    first = await proxy.post("/inventory/reservations", json={"lineId": "1"})
    second = await proxy.post("/inventory/reservations", json={"lineId": "2"})
    third = await proxy.post("/inventory/reservations", json={"lineId": "3"})

    assert first.status == 200
    await assert_proxy_error(second, 502, "upstream_unreachable")
    assert third.status == 200
    bodies = [request.rpartition(b"\r\n\r\n")[2] for request in upstream.requests]
    assert bodies == [b'{"lineId": "1"}', b'{"lineId": "2"}', b'{"lineId": "3"}']


async def test_a_body_that_stalls_past_the_timeout_is_504(
    make_proxy: ProxyFactory, raw_upstream: StartUpstream
) -> None:
    """timeout_s bounds the whole answer, its body included, not just its head."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    url, _ = await raw_upstream(lambda _number: Stalled(head + b"x" * 10))
    proxy = await make_proxy(upstream_url=url, route={"timeout_s": 0.3})

    response = await proxy.get("/inventory/items/1")

    body = await assert_proxy_error(response, 504, "upstream_timeout")
    assert "0.3s" in body["detail"]


async def test_an_answer_that_is_not_http_is_502(
    make_proxy: ProxyFactory, raw_upstream: StartUpstream
) -> None:
    """Bytes that do not parse as HTTP/1.1 are an unreachable upstream, not a 500."""
    url, _ = await raw_upstream(lambda _number: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    proxy = await make_proxy(upstream_url=url)

    response = await proxy.get("/inventory/items/1")

    body = await assert_proxy_error(response, 502, "upstream_unreachable")
    assert "SSH" not in body["detail"]
