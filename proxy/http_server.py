"""aiohttp's low-level HTTP server, set up for the proxy.

Requests aiohttp's parser cannot read never reach the proxy's handler. Examples are
a bad request line, a header over the limits, and framing two implementations
could read two ways. aiohttp answers them itself with a plain-text 400. Here
they get the proxy's JSON error instead, with a stable code and a request id. The
detail names only the parser's error type, because its message may quote the
request's bytes, credentials included. aiohttp's log record of the same error
becomes the ``request.malformed`` line (see ``observability``), which carries the
same request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from proxy.errors import error_response
from proxy.observability import (
    MALFORMED_REQUEST_LOGGER,
    bind_request_id,
    request_id_from,
)
from proxy.request_hygiene import SERVER_LIMITS

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# What every connection handler is given: bounded request lines and headers, and
# bodies passed through undecoded so that a gzip-encoded request reaches the
# upstream as the bytes it was labelled.
SERVER_ARGS: Final[dict[str, Any]] = {
    **SERVER_LIMITS,
    "auto_decompress": False,
    "logger": MALFORMED_REQUEST_LOGGER,
    "access_log": None,
}
_CODES = {400: "bad_request", 413: "body_too_large"}


class _ConnectionHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with the proxy's JSON for its errors."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        request_id = request_id_from(None)
        bind_request_id(request_id)
        # aiohttp's own answer: it logs the error, refuses when part of an answer
        # went out already, and closes the connection. Only its status is kept.
        plain = super().handle_error(request, status, exc, message)
        reason = type(exc).__name__ if exc is not None else "unknown"
        if plain.status < 500:
            code = _CODES.get(plain.status, "bad_request")
            detail = f"the request is not well-formed HTTP/1.1 ({reason})"
        else:
            code, detail = "internal_error", "the proxy failed on this call"
        answer = error_response(plain.status, code, detail, request_id)
        answer.headers["X-Request-ID"] = request_id
        answer.force_close()
        return answer


class ProxyHttpServer(web.Server):
    """``web.Server`` with ``SERVER_ARGS`` and JSON answers to unparsable requests."""

    def __init__(self, handler: Handler) -> None:
        self._serving_loop = asyncio.get_running_loop()
        super().__init__(handler, loop=self._serving_loop, **SERVER_ARGS)

    def __call__(self) -> web.RequestHandler:
        # web.Server builds each connection's handler here, from the same
        # arguments; only the class differs.
        return _ConnectionHandler(self, loop=self._serving_loop, **SERVER_ARGS)
