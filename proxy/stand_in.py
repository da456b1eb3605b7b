"""Stand-in tokens: answering an OMS's own token requests locally.

IBM Sterling OMS's inventory integration fetches its own token from
``{baseUrl}/{tenantId}/v1/oauth2/token`` before its calls, and every OMS server does
so separately, against a provider limit of 1,000 tokens per hour per tenant. When
the OMS's base URL points at the proxy, the proxy answers that request itself with a
stand-in: a random value with a long lifetime that is worth nothing anywhere else,
because the proxy replaces it with the real token on every call it forwards. The
identity provider then sees a single client, the proxy, however many OMS instances
there are.
"""

from __future__ import annotations

import json
import re
import secrets

from aiohttp import web

from proxy.config import UpstreamConfig
from proxy.errors import MethodNotAllowed

STAND_IN_PREFIX = "stand-in."


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A path pattern where ``*`` stands for exactly one path segment."""
    parts = (re.escape(part) if part != "*" else "[^/]+" for part in pattern.split("/"))
    return re.compile("/".join(parts))


class StandInTokens:
    """Which requests are an OMS asking for its own token, and the answer."""

    def __init__(self, upstream: UpstreamConfig) -> None:
        pattern = upstream.stand_in_token_path
        self._pattern = compile_pattern(pattern) if pattern else None
        self._lifetime_s = int(upstream.stand_in_token_lifetime_s)

    def matches(self, remainder: str) -> bool:
        """Whether the path below the upstream's prefix is a stand-in token request."""
        return self._pattern is not None and bool(self._pattern.fullmatch(remainder))

    def answer(self, request: web.BaseRequest) -> web.Response:
        """An RFC 6749 §5.1 answer carrying a fresh stand-in token."""
        if request.method != "POST":
            raise MethodNotAllowed("the token endpoint takes POST", allow="POST")
        body = {
            "access_token": STAND_IN_PREFIX + secrets.token_urlsafe(32),
            "token_type": "Bearer",
            "expires_in": self._lifetime_s,
        }
        # RFC 6749 §5.1: token answers must not be cached.
        return web.Response(
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )
