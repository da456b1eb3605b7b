"""Errors the proxy answers with, and their one JSON shape.

Every failure the proxy produces itself reaches the caller as
``{"error": <stable code>, "detail": <sentence>, "request_id": <id>}``; an upstream's
own answers pass through untouched. The tree stays shallow::

    ProxyError
    ├── BadRequest            400 bad_request
    ├── Unauthenticated       401 unauthenticated (with WWW-Authenticate)
    ├── Forbidden             403 forbidden
    ├── NoRoute               404 no_route
    ├── MethodNotAllowed      405 method_not_allowed
    ├── BodyTooLarge          413 body_too_large
    ├── RetryLater            (adds Retry-After)
    │   ├── RateLimited       429 rate_limited
    │   ├── TokenUnavailable  503 token_unavailable
    │   └── access.SigningKeysUnavailable  503 auth_unavailable
    ├── UpstreamUnreachable   502 upstream_unreachable
    └── UpstreamTimeout       504 upstream_timeout

Details are written for the caller: they never carry a token, a secret or a trace.
"""

from __future__ import annotations

import json
import math
from typing import ClassVar

from aiohttp import web


class ProxyError(Exception):
    """A failure answered by the proxy itself, with a status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Extra response headers this error carries."""
        return {}


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"


class Unauthenticated(ProxyError):
    """No usable credentials; RFC 9110 §11.6.1 wants a challenge with the 401."""

    status = 401
    code = "unauthenticated"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        super().__init__(detail)
        self.error = error

    def headers(self) -> dict[str, str]:
        # RFC 6750 §3: error only when a credential was presented and was bad.
        challenge = 'Bearer realm="inventory-proxy"'
        if self.error:
            challenge += f', error="{self.error}"'
        return {"WWW-Authenticate": challenge}


class Forbidden(ProxyError):
    status = 403
    code = "forbidden"


class NoRoute(ProxyError):
    status = 404
    code = "no_route"


class MethodNotAllowed(ProxyError):
    """RFC 9110 §15.5.6: a 405 names the methods the resource takes in Allow."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, detail: str, *, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class BodyTooLarge(ProxyError):
    status = 413
    code = "body_too_large"


class RetryLater(ProxyError):
    """A refusal that ends: the caller may try again after ``retry_after_s``."""

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        # RFC 9110 §10.2.3: delay-seconds is a non-negative integer.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class RateLimited(RetryLater):
    """The caller spent its request budget."""

    status = 429
    code = "rate_limited"


class UpstreamUnreachable(ProxyError):
    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(ProxyError):
    status = 504
    code = "upstream_timeout"


class TokenUnavailable(RetryLater):
    """No valid token can be had now."""

    status = 503
    code = "token_unavailable"


def error_response(
    status: int,
    code: str,
    detail: str,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Build the JSON answer that every proxy-made error shares."""
    body = {"error": code, "detail": detail, "request_id": request_id}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def proxy_error_response(error: ProxyError, request_id: str) -> web.Response:
    """Answer ``error`` in the shared JSON shape, with its extra headers."""
    return error_response(
        error.status, error.code, error.detail, request_id, error.headers()
    )
