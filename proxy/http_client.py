"""The proxy's outbound HTTP clients: pooled, and adding nothing of their own."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

import aiohttp
from aiohttp import hdrs
from aiohttp.helpers import BaseTimerContext, TimeoutHandle
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict
from yarl import URL

# Connections kept open per pool; one pool per upstream, one for token requests.
POOL_CONNECTIONS = 256
# For pools whose every request sets its own timeout: a backstop only.
BACKSTOP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=30)
# RFC 9110 §9.2.2.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class GivenHeadersRequest(aiohttp.ClientRequest):
    """A request that sends its Host and the headers it was given, nothing more.

    aiohttp's own request copies the given headers one Python step at a time and
    then works out, per call, which automatic headers (Accept, Accept-Encoding,
    User-Agent) to leave out. These pools leave out all of them, so one copy in C
    is enough: bench/callgrind.py counts about 3 % less work per proxied call.
    """

    def update_headers(self, headers: LooseHeaders | None) -> None:
        """Host as aiohttp works it out, unless given one, then the given headers."""
        super().update_headers(None)
        if not headers:
            return
        given = CIMultiDict(headers)
        for host in given.popall(hdrs.HOST, ()):
            self.headers[hdrs.HOST] = host
        self.headers.extend(given)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        """Add none: the upstream sees the caller's own headers only."""


def pooled_session(
    *,
    timeout: aiohttp.ClientTimeout | None = None,
    tls: ssl.SSLContext | bool = True,
) -> aiohttp.ClientSession:
    """A keep-alive pool that sends only what the caller gave it.

    No cookie jar (one caller's cookies must never reach another's call), no
    decompression (bodies pass through untouched), no automatic Accept-Encoding
    or User-Agent (``GivenHeadersRequest``: the upstream sees the OMS's own
    headers), and no proxy settings from the environment. ``tls`` is how
    certificates are verified: the default store (True), a private CA's context,
    or not at all (False).
    """
    return _session_over(_pool_connector(tls), timeout or BACKSTOP_TIMEOUT)


def _pool_connector(tls: ssl.SSLContext | bool) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=POOL_CONNECTIONS, ttl_dns_cache=60, ssl=tls)


def _session_over(
    connector: aiohttp.BaseConnector, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        request_class=GivenHeadersRequest,
        trust_env=False,
        timeout=timeout,
    )


class UpstreamPool:
    """Keep-alive connections to one upstream, and the proxy's calls over them.

    ``ClientSession.request`` does work on every call that a proxy has switched
    off: it merges default headers and copies them one by one, looks for cookies,
    credentials in the URL, netrc and proxy settings, and runs traces, middlewares
    and the redirect loop: about 15 % of the CPU aiohttp's client spends on a small
    call. ``send`` keeps only what a call needs, from the parts the session is made
    of: its connector (the pool, DNS cache and TLS), its request and response
    classes (the HTTP/1.1 writer and C parser), its total timeout, which also covers
    reading the answer's body, and its one resend of an idempotent call whose
    pooled connection the upstream had closed.

    Those parts are aiohttp's internals, which is why ``pyproject.toml`` admits only
    the minor releases the tests have passed on. Construct inside the event loop
    that will use it; ``close`` ends the connections.
    """

    def __init__(
        self, *, timeout: aiohttp.ClientTimeout, tls: ssl.SSLContext | bool = True
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._connector = _pool_connector(tls)
        # The session owns the connector and closes it; requests and answers
        # refer to it for their loop and settings.
        self._session = _session_over(self._connector, timeout)
        self._timeout = timeout

    async def close(self) -> None:
        """Close every connection."""
        await self._session.close()

    async def send(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None
    ) -> aiohttp.ClientResponse:
        """Send one call and return once the answer's head has arrived.

        Raises ``TimeoutError`` when the total timeout passes and
        ``aiohttp.ClientError`` when the upstream cannot be reached or answers
        with broken HTTP, as ``ClientSession.request`` does. Redirects are
        returned, never followed. The caller must read or release the answer.
        """
        deadline = TimeoutHandle(
            self._loop,
            self._timeout.total,
            ceil_threshold=self._timeout.ceil_threshold,
        )
        expiry = deadline.start()
        timer = deadline.timer()
        try:
            with timer:
                response = await self._send_on_pool(method, url, headers, body, timer)
        except BaseException:
            deadline.close()
            if expiry is not None:
                expiry.cancel()
            raise
        if expiry is not None:
            # The timer stays armed until the connection goes back to the pool.
            if response.connection is not None:
                response.connection.add_callback(expiry.cancel)
            else:
                expiry.cancel()
        return response

    async def _send_on_pool(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes | None,
        timer: BaseTimerContext,
    ) -> aiohttp.ClientResponse:
        # RFC 9112 §9.3.1: a call that may be repeated is sent again once when its
        # pooled connection turns out to have been closed by the upstream.
        retries = 1 if method in _IDEMPOTENT else 0
        while True:
            request = GivenHeadersRequest(
                method,
                url,
                headers=headers,
                data=body,
                loop=self._loop,
                timer=timer,
                session=self._session,
            )
            try:
                return await self._exchange(request, timer)
            except aiohttp.ClientConnectorError:
                raise  # no connection was made: nothing to resend on
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                if retries == 0:
                    raise
                retries -= 1
            except OSError as exc:
                if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError too
                    raise
                raise aiohttp.ClientOSError(*exc.args) from exc

    async def _exchange(
        self, request: GivenHeadersRequest, timer: BaseTimerContext
    ) -> aiohttp.ClientResponse:
        connection = await self._connector.connect(
            request, traces=[], timeout=self._timeout
        )
        protocol = connection.protocol
        if protocol is None:  # closed between leaving the pool and now
            raise aiohttp.ServerDisconnectedError()
        protocol.set_response_params(
            timer=timer,
            skip_payload=request.method == "HEAD",
            read_until_eof=True,
            auto_decompress=False,
            read_timeout=self._timeout.sock_read,
            timeout_ceil_threshold=self._timeout.ceil_threshold,
        )
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException:
            connection.close()
            raise
        return response
