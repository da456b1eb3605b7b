"""client_secret_jwt and private_key_jwt: clients that authenticate with a signed JWT.

RFC 7523 section 2.2, as OpenID Connect Core section 9 profiles it: the token request
carries `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
and a `client_assertion` whose `iss` and `sub` are the client id, whose `aud` is the
token endpoint, with a future `exp` and a `jti` that is never seen twice. An HS256
assertion is signed with the client secret (client_secret_jwt); an RS256 or ES256
one with a private key whose public half the client registered (private_key_jwt).

The audience accepted is exactly the URL the request reached, `str(request.url)`
(scheme, host and port as the client addressed them, path, and any query string). A
deployment with a canonical issuer URL would also accept that; the demo has none.

Why not authlib's `JWTBearerClientAssertion`: it serves both methods under one name
and picks the key by client rather than by method, so an HS256 assertion would reach
a private_key_jwt client's key check instead of being refused for its method; its
audience hook cannot see the request; it raises from inside authlib's method loop,
so a second assertion method never runs; and it tells unknown client ids apart. This
verifier is small and sits on joserfc, as authlib's does.

The invariant: nothing the assertion says is trusted before its signature verifies.
Until then every refusal reads the same, so a caller learns neither which clients
exist nor which keys they hold; a `jti` is remembered only once the whole assertion
has passed, so a forged one cannot burn a genuine client's `jti`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import structlog

# authlib ships no type information; see oauth2_server for the ignore's second code.
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped, unused-ignore]
    InvalidClientError,
    OAuth2Request,
)
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, RSAKey

from proxy.demo.clients import RegisteredClient

__all__ = ["CLIENT_ASSERTION_TYPE", "ClientAssertionVerifier", "refuse_client"]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Which method an assertion claims to use is read from its `alg` alone.
_METHOD_BY_ALG: Mapping[str, str] = {
    "HS256": "client_secret_jwt",
    "RS256": "private_key_jwt",
    "ES256": "private_key_jwt",
}
_NOT_VERIFIED = "The client assertion could not be verified."

QueryClient = Callable[[str], RegisteredClient | None]

log = structlog.get_logger(__name__)


def refuse_client(description: str) -> InvalidClientError:
    """An RFC 6749 section 5.2 invalid_client answer, always a 401."""
    return InvalidClientError(status_code=401, description=description)


class ClientAssertionVerifier:
    """Authenticates token requests that carry an RFC 7523 client assertion.

    `accepted_methods` are the provider's methods; `for_method(name)` gives the
    authlib client auth function for one of client_secret_jwt and private_key_jwt.
    `jti`s are remembered until their assertion expires, in memory. `leeway_s`
    forgives clock skew on `exp`, `nbf` and `iat`; `now` is the wall clock.
    """

    def __init__(
        self,
        accepted_methods: Collection[str],
        *,
        leeway_s: int = 30,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._accepted = frozenset(accepted_methods)
        self._leeway_s = leeway_s
        self._now = now
        self._seen_jtis: dict[tuple[str, str], float] = {}

    def for_method(
        self, method: str
    ) -> Callable[[QueryClient, OAuth2Request], RegisteredClient | None]:
        """The function authlib calls to try `method` on a request."""

        def authenticate(
            query_client: QueryClient, request: OAuth2Request
        ) -> RegisteredClient | None:
            return self.authenticate(method, query_client, request)

        return authenticate

    def authenticate(
        self, method: str, query_client: QueryClient, request: OAuth2Request
    ) -> RegisteredClient | None:
        """Return the client the assertion proves, or None when it is not `method`'s.

        Raises a 401 invalid_client when the request carries an assertion for this
        method (or for one the provider does not serve) that does not verify.
        """
        form = request.payload.data
        read = _read_assertion(form)
        if read is None:
            return None
        assertion, header, claims = read

        owner = _METHOD_BY_ALG[header["alg"]]
        if owner != method:
            # Leave it to the owner's own turn in authlib's loop, if it has one.
            if owner in self._accepted:
                return None
            raise refuse_client(f"This provider does not accept {owner}.")

        # RFC 7521 section 4.2: a client_id sent alongside must name the same client.
        form_client_id = form.get("client_id")
        if form_client_id is not None and form_client_id != claims.get("sub"):
            raise refuse_client("client_id does not match the assertion's sub.")

        client = _verified_client(assertion, header, claims, method, query_client)
        self._check_claims(claims, client.client_id, request.uri)
        return client

    def _check_claims(self, claims: dict[str, Any], client_id: str, aud: str) -> None:
        # RFC 7523 section 3 and OIDC Core section 9: who, for whom, until when.
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._now()),
            leeway=self._leeway_s,
            iss={"essential": True, "value": client_id},
            sub={"essential": True, "value": client_id},
            aud={"essential": True, "value": aud},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as error:
            raise refuse_client(f"The client assertion is refused: {error}.") from error

        # RFC 7523 section 3, item 7: a jti may be used once while it could be valid.
        now = self._now()
        self._seen_jtis = {
            seen: until for seen, until in self._seen_jtis.items() if until > now
        }
        seen = (client_id, claims["jti"])
        if seen in self._seen_jtis:
            raise refuse_client("The client assertion's jti has been used before.")
        self._seen_jtis[seen] = float(claims["exp"]) + self._leeway_s


def _read_assertion(
    form: Mapping[str, str],
) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """The assertion with its unverified header and claims, None if there is none."""
    assertion_type = form.get("client_assertion_type")
    assertion = form.get("client_assertion")
    if assertion_type is None and assertion is None:
        return None
    if assertion_type != CLIENT_ASSERTION_TYPE or not assertion:
        raise refuse_client(
            f"client_assertion_type must be {CLIENT_ASSERTION_TYPE} and come"
            " with a client_assertion."
        )

    header, claims = _peek(assertion)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _METHOD_BY_ALG:
        raise refuse_client(
            f"A client assertion signed with {alg!r} is not accepted: use HS256"
            " (client_secret_jwt), RS256 or ES256 (private_key_jwt)."
        )
    return assertion, header, claims


def _verified_client(
    assertion: str,
    header: dict[str, Any],
    claims: dict[str, Any],
    method: str,
    query_client: QueryClient,
) -> RegisteredClient:
    """The client named by `sub`, once the signature verifies with its key."""
    client_id = claims.get("sub")
    client = query_client(client_id) if isinstance(client_id, str) else None
    key = _key_for(client, method, header.get("kid"))
    if client is None or key is None:
        raise refuse_client(_NOT_VERIFIED)

    try:
        jwt.decode(assertion, key, algorithms=[header["alg"]])
    except (JoseError, ValueError) as error:
        log.info("idp.client_assertion_refused", reason=type(error).__name__)
        raise refuse_client(_NOT_VERIFIED) from error
    return client


def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, not yet verified."""
    try:
        obj = jws.extract_compact(assertion.encode())
        claims = json.loads(obj.payload)
    except (JoseError, ValueError) as error:
        raise refuse_client("The client assertion is not a signed JWT.") from error
    if not isinstance(claims, dict):
        raise refuse_client("The client assertion is not a signed JWT.")
    return obj.headers(), claims


def _key_for(
    client: RegisteredClient | None, method: str, kid: object
) -> OctKey | RSAKey | ECKey | None:
    if client is None or not client.check_endpoint_auth_method(method, "token"):
        return None
    if method == "client_secret_jwt":
        return client.hs256_key

    # OIDC Core section 10.1: with several keys registered, the kid MUST be given.
    keys = client.public_keys
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.kid == kid), None)
