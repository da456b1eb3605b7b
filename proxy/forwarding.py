"""One call upstream and back: headers, body, the token, one replay after a 401.

The body is read in full (bounded by ``server.max_body_bytes``) before the call so
that it can be replayed byte for byte: a 401 means the upstream did not act, so an
availability lookup or a reservation is safe to send again with a fresh token. The
response streams back as it arrives, with the upstream's status and headers less
the hop-by-hop ones. Redirects are handed back, never followed, so a token is never
sent to a host the configuration does not name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, BodyTooLarge, UpstreamTimeout, UpstreamUnreachable
from proxy.holders import CredentialHolder
from proxy.http_client import UpstreamPool
from proxy.metrics import Metrics
from proxy.observability import CallRecord, parse_address
from proxy.routing import RouteMatch
from proxy.sharing import Answer, Sharing
from proxy.tokens import AccessToken

log = structlog.get_logger("proxy.forwarding")

# RFC 9110 §7.6.1 names these; Proxy-* headers belong to the hop as well.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_SET_BY_PROXY = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
        "x-api-key",
    }
)
_CHUNK_BYTES = 64 * 1024
# Answers up to this size with a known length are read whole and sent in one write,
# which costs less than streaming them; larger or chunked ones stream.
_BUFFERED_BYTES = 256 * 1024
# What never passes from the caller's request, or from the upstream's answer when
# it is sent in one piece (the body's length is set anew).
_NOT_FROM_CALLER = HOP_BY_HOP | _SET_BY_PROXY
_NOT_IN_WHOLE_ANSWER = HOP_BY_HOP | {"content-length"}


class Forwarder:
    """Sends requests to their upstream with a token from the right holder.

    Each upstream has its own connection pool, with its timeouts and TLS settings
    built in, so a slow upstream cannot take the connections of another.
    Construct it inside the event loop that will use it; ``close`` ends the pools.
    """

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamConfig],
        holders: Mapping[str, CredentialHolder],
        *,
        max_body_bytes: int,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self._holders = holders
        self._max_body_bytes = max_body_bytes
        self._trusted_proxies = trusted_proxies
        self._metrics = metrics or Metrics()
        self._pools = {
            name: UpstreamPool(timeout=_timeout(up), tls=upstream_tls(up))
            for name, up in upstreams.items()
        }
        self._sharing = {
            name: Sharing(up) for name, up in upstreams.items() if up.share_identical
        }

    async def close(self) -> None:
        """Close every upstream's connections."""
        for pool in self._pools.values():
            await pool.close()

    async def forward(
        self,
        request: web.BaseRequest,
        match: RouteMatch,
        record: CallRecord,
    ) -> web.StreamResponse:
        """Forward ``request`` to ``match.url``, replaying once after a 401."""
        request_id = record.request_id
        body = await self._read_body(request) if request.body_exists else None
        headers = upstream_request_headers(request, request_id, self._trusted_proxies)
        headers.popall(match.route.upstream.auth_header, None)

        method = request.method
        sharing = self._sharing.get(match.route.name)
        if sharing is not None:
            key = sharing.key(
                method,
                match.remainder,
                match.url.raw_query_string,
                body,
                request.headers,
            )
            if key is not None:
                answer, outcome = await sharing.answer(
                    key,
                    lambda: _whole(
                        self._exchange(method, match, headers, body, record), match
                    ),
                )
                if outcome != "leader":
                    record.sharing = outcome
                return _respond(answer)

        upstream = await self._exchange(method, match, headers, body, record)
        return await self._stream_back(request, upstream, match, request_id)

    async def _exchange(
        self,
        method: str,
        match: RouteMatch,
        headers: CIMultiDict[str],
        body: bytes | None,
        record: CallRecord,
    ) -> aiohttp.ClientResponse:
        """Send with the current token; after a 401, retire it and replay once."""
        upstream = match.route.upstream
        holder = self._holders[upstream.token_source]
        token = await holder.token()
        response = await self._send(method, match, headers, body, token)
        if response.status != 401 or not holder.retire(token):
            return response

        response.release()
        fresh = await holder.token()
        record.replayed = True
        self._metrics.replays.labels(match.route.name).inc()
        response = await self._send(method, match, headers, body, fresh)
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate")
            log.warning(
                "upstream.token_rejected",
                upstream=match.route.name,
                source=upstream.token_source,
                www_authenticate=challenge,
            )
            holder.refused_when_fresh(fresh, challenge)
        return response

    async def _send(
        self,
        method: str,
        match: RouteMatch,
        headers: CIMultiDict[str],
        body: bytes | None,
        token: AccessToken,
    ) -> aiohttp.ClientResponse:
        upstream = match.route.upstream
        headers[upstream.auth_header] = upstream.auth_format.replace(
            "{token}", token.value
        )
        try:
            return await self._pools[match.route.name].send(
                method, match.url, headers, body
            )
        except TimeoutError:
            raise _timed_out(match) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"upstream {match.route.name!r} could not be reached "
                f"({type(exc).__name__})"
            ) from None

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self._max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLarge(f"the request body exceeds {limit} bytes")
        try:
            if length is not None:
                return await request.content.readexactly(length)
            body = bytearray()
            async for chunk in request.content.iter_chunked(_CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge(f"the request body exceeds {limit} bytes")
            return bytes(body)
        except (asyncio.IncompleteReadError, HttpProcessingError, ConnectionError):
            # Nobody will read this answer; it names the call in the access log.
            raise BadRequest("the caller hung up before its body ended") from None

    async def _stream_back(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        match: RouteMatch,
        request_id: str,
    ) -> web.StreamResponse:
        length = upstream.content_length
        small = length is not None and length <= _BUFFERED_BYTES
        if small and request.method != "HEAD":
            return _respond(await _read_whole(upstream, match))
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end_headers(upstream.headers),
            )
            response.headers["X-Request-ID"] = request_id
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(_CHUNK_BYTES):
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "upstream.body_interrupted",
                    status=upstream.status,
                    reason=type(exc).__name__,
                )
                # Closing without the final chunk tells the caller the body is
                # incomplete; aiohttp then treats the call as a disconnect.
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
        return response


async def _whole(
    pending: Awaitable[aiohttp.ClientResponse], match: RouteMatch
) -> Answer:
    return await _read_whole(await pending, match)


async def _read_whole(upstream: aiohttp.ClientResponse, match: RouteMatch) -> Answer:
    """The upstream's answer read to its end and released, for one write or sharing.

    Read to its end, the answer has handed its connection back already; the one
    ``release()`` only tidies up after a failed read. ``async with`` would release
    twice and then wait on the request-body writer that the first release cancels.
    """
    try:
        body = await upstream.read()
    except TimeoutError:
        raise _timed_out(match) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"the upstream broke off its answer ({type(exc).__name__})"
        ) from None
    finally:
        upstream.release()
    headers = end_to_end_headers(upstream.headers, _NOT_IN_WHOLE_ANSWER)
    return Answer(upstream.status, upstream.reason, headers, body)


def _respond(answer: Answer) -> web.Response:
    # The response copies the headers, so a shared answer's stay as they were.
    return web.Response(
        status=answer.status,
        reason=answer.reason,
        body=answer.body,
        headers=answer.headers,
    )


def _timed_out(match: RouteMatch) -> UpstreamTimeout:
    """The 504 for an answer, head or body, that the upstream's timeout cut off."""
    return UpstreamTimeout(
        f"upstream {match.route.name!r} did not answer within "
        f"{match.route.upstream.timeout_s:g}s"
    )


def _timeout(upstream: UpstreamConfig) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=upstream.timeout_s, connect=upstream.connect_timeout_s
    )


def upstream_tls(upstream: UpstreamConfig) -> ssl.SSLContext | bool:
    """How calls to ``upstream`` verify its certificate: the default store, a
    private CA, or (only when configured so, with a warning) not at all."""
    if not upstream.tls_verify:
        return False
    if upstream.ca_file is not None:
        return ssl.create_default_context(cafile=str(upstream.ca_file))
    return True


def upstream_request_headers(
    request: web.BaseRequest,
    request_id: str,
    trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
) -> CIMultiDict[str]:
    """The caller's end-to-end headers plus the ones the proxy owns.

    The caller's credentials are dropped (Authorization and X-API-Key: the token
    replaces them). X-Forwarded-For is extended only when the peer is a trusted
    proxy; from anyone else it is replaced, since the peer is the first hop the
    proxy can vouch for.
    """
    headers = end_to_end_headers(request.headers, _NOT_FROM_CALLER)
    peer = request.remote or ""
    chain = [peer]
    if _is_trusted(peer, trusted_proxies):
        earlier = ", ".join(request.headers.getall("X-Forwarded-For", ()))
        chain = [earlier, peer] if earlier else chain
    headers["X-Forwarded-For"] = ", ".join(chain)
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    headers["X-Request-ID"] = request_id
    return headers


def _is_trusted(
    peer: str, trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> bool:
    if not trusted_proxies:
        return False
    address = parse_address(peer)
    return address is not None and any(
        address in network for network in trusted_proxies
    )


def end_to_end_headers(
    headers: CIMultiDictProxy[str],
    dropped: frozenset[str] = HOP_BY_HOP,
) -> CIMultiDict[str]:
    """``headers`` without ``dropped`` ones, those Connection names, and Proxy-*.

    Every other value stays, in order, however its name is spelled: a name sent
    twice in different cases (``X-Tenant``, then ``x-tenant``) reaches the other
    side twice.
    """
    # Copy in C, then pop only what is found: a call carries a handful of
    # headers, fewer than the names that may have to go.
    kept = CIMultiDict(headers)
    if "Connection" in headers:
        for value in headers.getall("Connection"):
            for token in value.split(","):
                kept.popall(token.strip(), None)
    for name in headers:
        folded = name.lower()
        if folded in dropped or folded.startswith("proxy-"):
            kept.popall(name, None)
    return kept
