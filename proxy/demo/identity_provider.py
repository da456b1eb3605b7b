"""A real OAuth2 authorization server for the demo backend and the test suite.

`IdentityProvider` issues client_credentials tokens (RFC 6749 section 4.4) through
authlib's server side (adapted to aiohttp in `oauth2_server`) and remembers every
token it issued so that the demo upstreams can check bearer tokens with `verify`.
Clients authenticate with a secret (Basic or in the form), a signed JWT
(`client_assertions`) or a TLS certificate (`mtls`); registrations are checked in
`clients`. With `request_format="json"` the same provider plays a vendor endpoint that
takes JSON and answers in its own shape (`json_token_endpoint`), and
`max_token_requests_per_hour` caps requests as IBM does (`rate_limit`).

The invariant that matters to callers: the deadline of a token is kept internally as a
`time.monotonic()` float (or an injected clock's) and is the only truth `verify`
consults. What the answer announces is rounded up (`expires_in` is an integer of at
least 1, and so is a JWT's `exp`), so a client that waits for the announced expiry
meets a 401 at the edge, as it would with clock skew against a real provider.

Plain http is accepted only because authlib exempts loopback hosts from its https check
(RFC 8252 section 7.3); on any other host the endpoint answers `insecure_transport`.
No process-wide `AUTHLIB_INSECURE_TRANSPORT` is set.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Literal

import structlog
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from proxy.demo.clients import (
    AUTH_METHODS,
    AuthMethod,
    ClientRegistration,
    RegisteredClient,
    register_client,
)
from proxy.demo.json_token_endpoint import JsonTokenEndpoint, json_error
from proxy.demo.oauth2_server import TokenServer
from proxy.demo.rate_limit import RequestWindow

__all__ = [
    "AuthMethod",
    "ClientRegistration",
    "IdentityProvider",
    "JwtAlgorithm",
    "RequestFormat",
    "TokenFormat",
    "announced_expires_in",
]

TokenFormat = Literal["opaque", "jwt"]
JwtAlgorithm = Literal["HS256", "RS256"]
RequestFormat = Literal["form", "json"]

log = structlog.get_logger(__name__)


class IdentityProvider:
    """An OAuth2 token endpoint for registered confidential clients.

    `clients` maps each client_id to its secret or to a `ClientRegistration` (public
    keys, certificate subject, methods of its own). Only the client_credentials grant
    is served, over the methods in `auth_methods`; failures get authlib's RFC 6749
    section 5.2 answers, and `invalid_client` is always a 401. Tokens are random
    strings (`token_format="opaque"`) or JWTs carrying `sub`, `iat`, `exp` and `jti`,
    signed with a key this provider generates. A client assertion (client_secret_jwt,
    private_key_jwt) must carry in `aud` the endpoint's URL exactly as the request
    reached it, `str(request.url)`, such as `http://127.0.0.1:8080/oauth2/token`.

    `token_lifetime_s` may be fractional and may be changed between requests; it
    applies to tokens issued afterwards. `scopes`, when given, is the set a client may
    request; otherwise any requested scope is granted and echoed. `clock` (seconds,
    monotonic) decides expiry and the rate limit window; tests may pass a fake one
    instead of sleeping.

    `request_format="json"` serves the vendor JSON endpoint of `json_token_endpoint`
    instead; every client then needs a secret, and `auth_methods` and `scopes` are
    not consulted. `max_token_requests_per_hour` refuses requests beyond the cap with
    a 429 and `Retry-After`; refused requests count in `token_requests` too.
    """

    def __init__(
        self,
        clients: Mapping[str, str | ClientRegistration],
        *,
        token_lifetime_s: float = 43200.0,
        auth_methods: Collection[AuthMethod] = (
            "client_secret_basic",
            "client_secret_post",
        ),
        include_expires_in: bool = True,
        token_format: TokenFormat = "opaque",  # noqa: S107  # a format, no secret
        jwt_algorithm: JwtAlgorithm = "HS256",
        scopes: Collection[str] | None = None,
        request_format: RequestFormat = "form",
        max_token_requests_per_hour: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(auth_methods) - AUTH_METHODS
        if not auth_methods or unknown:
            raise ValueError(
                f"auth_methods must be drawn from {sorted(AUTH_METHODS)}, "
                f"got {sorted(auth_methods)}"
            )
        if not clients:
            raise ValueError("an identity provider needs at least one client")
        registered = {
            client_id: register_client(client_id, registration, auth_methods)
            for client_id, registration in clients.items()
        }

        self.include_expires_in = include_expires_in
        self.token_requests = 0
        self.tokens_issued = 0
        self.last_token: str | None = None
        self._token_lifetime_s = _checked_lifetime(token_lifetime_s)
        self._tokens: dict[str, float] = {}
        self._clock = clock
        self._signing_key = _new_signing_key(token_format, jwt_algorithm)
        self._jwt_algorithm = jwt_algorithm
        self._request_format = request_format
        self._max_requests_per_hour = max_token_requests_per_hour
        self._window = (
            None
            if max_token_requests_per_hour is None
            else RequestWindow(max_token_requests_per_hour, clock=clock)
        )
        self._server = TokenServer(
            registered, auth_methods, scopes, self._generate_token, self._save_token
        )
        self._json_endpoint = _json_endpoint(request_format, registered, self._issue)

    @property
    def token_lifetime_s(self) -> float:
        """Lifetime of tokens issued from now on, in seconds."""
        return self._token_lifetime_s

    @token_lifetime_s.setter
    def token_lifetime_s(self, value: float) -> None:
        self._token_lifetime_s = _checked_lifetime(value)

    @property
    def signing_key(self) -> OctKey | RSAKey | None:
        """The key JWTs are signed with, or None when tokens are opaque."""
        return self._signing_key

    def verify(self, token: str) -> bool:
        """Tell whether `token` was issued here, is not revoked and has not expired."""
        expires_at = self._tokens.get(token)
        return expires_at is not None and self._clock() < expires_at

    def revoke(self, token: str | None = None) -> None:
        """Revoke one token, or every token issued so far when `token` is None."""
        if token is None:
            self._tokens.clear()
        else:
            self._tokens.pop(token, None)

    def build_app(self, path: str = "/oauth2/token") -> web.Application:
        """Return a new, unfrozen aiohttp app serving the token endpoint at `path`.

        Only POST is routed. Callers may append middlewares before the app starts.
        """
        app = web.Application()
        app.router.add_post(path, self.handle_token_request)
        return app

    async def handle_token_request(self, request: web.Request) -> web.Response:
        """Answer one token request; usable as a route handler in any aiohttp app."""
        self.token_requests += 1
        retry_after_s = self._window.admit() if self._window is not None else None
        if retry_after_s is not None:
            return self._rate_limited(retry_after_s)

        if self._json_endpoint is not None:
            return await self._json_endpoint.respond(request)
        return await self._server.respond(request)

    def _rate_limited(self, retry_after_s: int) -> web.Response:
        message = (
            f"More than {self._max_requests_per_hour} token requests in an hour;"
            f" retry in {retry_after_s} s."
        )
        headers = {"Retry-After": str(retry_after_s)}
        log.warning("idp.rate_limited", retry_after_s=retry_after_s)

        # RFC 6585 section 4 defines the status only; the body follows each format.
        if self._request_format == "json":
            return json_error(429, "RATE_LIMITED", message, headers)
        body = {"error": "rate_limited", "error_description": message}
        return web.json_response(body, status=429, headers=headers)

    def _issue(self, client: RegisteredClient) -> dict[str, object]:
        token = self._generate_token(grant_type="client_credentials", client=client)
        self._save_token(token, client.client_id)
        return token

    def _generate_token(
        self,
        *,
        grant_type: str,
        client: RegisteredClient,
        user: object = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, object]:
        token: dict[str, object] = {
            "token_type": "Bearer",
            "access_token": self._new_access_token(client.client_id, scope),
        }
        if self.include_expires_in:
            token["expires_in"] = announced_expires_in(self._token_lifetime_s)
        if scope:
            token["scope"] = scope
        return token

    def _new_access_token(self, client_id: str, scope: str | None) -> str:
        if self._signing_key is None:
            return secrets.token_urlsafe(32)

        issued_at = time.time()
        claims: dict[str, object] = {
            "sub": client_id,
            "client_id": client_id,
            "iat": int(issued_at),
            "exp": math.ceil(issued_at + self._token_lifetime_s),
            "jti": uuid.uuid4().hex,
        }
        if scope:
            claims["scope"] = scope
        return jwt.encode({"alg": self._jwt_algorithm}, claims, self._signing_key)

    def _save_token(self, token: Mapping[str, object], client_id: str) -> None:
        now = self._clock()
        self._tokens = {
            t: deadline for t, deadline in self._tokens.items() if deadline > now
        }

        access_token = str(token["access_token"])
        self._tokens[access_token] = now + self._token_lifetime_s
        self.tokens_issued += 1
        self.last_token = access_token
        log.info(
            "idp.token_issued", client_id=client_id, lifetime_s=self._token_lifetime_s
        )


def announced_expires_in(lifetime_s: float) -> int:
    """Return the `expires_in` announced for a lifetime: rounded up, at least 1.

    RFC 6749 section 5.1 defines `expires_in` as a number of seconds; integers are what
    clients expect, so fractional test lifetimes are rounded up.
    """
    return max(1, math.ceil(lifetime_s))


def _checked_lifetime(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"token_lifetime_s must be a positive number of seconds, not {value!r}"
        )
    return float(value)


def _json_endpoint(
    request_format: RequestFormat,
    clients: Mapping[str, RegisteredClient],
    issue: Callable[[RegisteredClient], dict[str, object]],
) -> JsonTokenEndpoint | None:
    if request_format == "form":
        return None
    if request_format != "json":
        raise ValueError(
            f"request_format must be 'form' or 'json', not {request_format!r}"
        )
    without_secret = sorted(
        c.client_id for c in clients.values() if not c.client_secret
    )
    if without_secret:
        raise ValueError(
            f"clients {without_secret} have no secret, which the JSON endpoint needs"
        )
    return JsonTokenEndpoint(clients, issue)


def _new_signing_key(
    token_format: TokenFormat, algorithm: JwtAlgorithm
) -> OctKey | RSAKey | None:
    match token_format, algorithm:
        case "opaque", _:
            return None
        case "jwt", "HS256":
            return OctKey.generate_key(256)
        case "jwt", "RS256":
            return RSAKey.generate_key(2048)
    raise ValueError(
        f"token_format must be 'opaque' or 'jwt' and jwt_algorithm 'HS256' or 'RS256',"
        f" not {token_format!r} and {algorithm!r}"
    )
