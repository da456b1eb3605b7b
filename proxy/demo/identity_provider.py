"""A real OAuth2 authorization server for the demo backend and the test suite.

`IdentityProvider` issues client_credentials tokens (RFC 6749 section 4.4) through
authlib's server side (adapted to aiohttp in `oauth2_server`) and remembers every
token it issued so that the demo upstreams can check bearer tokens with `verify`.

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

from proxy.demo.oauth2_server import RegisteredClient, TokenServer

__all__ = [
    "AuthMethod",
    "IdentityProvider",
    "JwtAlgorithm",
    "TokenFormat",
    "announced_expires_in",
]

AuthMethod = Literal["client_secret_basic", "client_secret_post"]
TokenFormat = Literal["opaque", "jwt"]
JwtAlgorithm = Literal["HS256", "RS256"]

_AUTH_METHODS: frozenset[str] = frozenset(("client_secret_basic", "client_secret_post"))

log = structlog.get_logger(__name__)


class IdentityProvider:
    """An OAuth2 token endpoint for registered confidential clients.

    `clients` maps each client_id to its client_secret. Only the client_credentials
    grant is served, over the methods in `auth_methods`; failures get authlib's RFC 6749
    section 5.2 answers (`invalid_client` is a 401 whenever client_secret_basic is
    allowed). Tokens are random strings (`token_format="opaque"`) or JWTs carrying
    `sub`, `iat`, `exp` and `jti`, signed with a key this provider generates.

    `token_lifetime_s` may be fractional and may be changed between requests; it
    applies to tokens issued afterwards. `scopes`, when given, is the set a client may
    request; otherwise any requested scope is granted and echoed. `clock` (seconds,
    monotonic) decides expiry; tests may pass a fake one instead of sleeping.
    """

    def __init__(
        self,
        clients: Mapping[str, str],
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = set(auth_methods) - _AUTH_METHODS
        if not auth_methods or unknown:
            raise ValueError(
                f"auth_methods must be drawn from {sorted(_AUTH_METHODS)}, "
                f"got {sorted(auth_methods)}"
            )
        if not clients or not all(clients) or not all(clients.values()):
            raise ValueError(
                "clients must map non-empty client ids to non-empty secrets"
            )

        self.include_expires_in = include_expires_in
        self.token_requests = 0
        self.tokens_issued = 0
        self.last_token: str | None = None
        self._token_lifetime_s = _checked_lifetime(token_lifetime_s)
        self._tokens: dict[str, float] = {}
        self._clock = clock
        self._signing_key = _new_signing_key(token_format, jwt_algorithm)
        self._jwt_algorithm = jwt_algorithm

        registered = {
            client_id: RegisteredClient(client_id, secret, frozenset(auth_methods))
            for client_id, secret in clients.items()
        }
        self._server = TokenServer(
            registered, auth_methods, scopes, self._generate_token, self._save_token
        )

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

        return await self._server.respond(request)

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
