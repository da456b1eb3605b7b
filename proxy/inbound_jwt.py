"""Verification of partner JWT access tokens against the identity provider's keys.

A partner outside the trusted networks may present a JWT from its identity provider;
``JwtVerifier`` checks its algorithm, signature, issuer, audience and lifetime and
says who the caller is and what its scopes grant.

The signing keys come from the provider's JWKS and are cached. The tricky invariant:
the JWKS is requested **at most once per** ``jwks_refetch_min_interval_s`` (only the
first fetch is exempt), and concurrent verifications that need keys share **one**
request in flight: they queue on one ``asyncio.Lock`` and, when a request finished
while they waited, use its result instead of sending another. So a flood of tokens
naming random key ids costs the provider at most one request per interval, while a
genuinely rotated key is picked up by the first token that names it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry, Key, KeySet
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from proxy.access_config import InboundJwtConfig

log = structlog.get_logger("proxy.inbound_jwt")

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_MAX_JWKS_BYTES = 512 * 1024


class InvalidJwt(Exception):
    """A refused token; ``reason`` is safe to log and to show the caller.

    Reasons are short stable phrases and never hold the token or key material.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksUnavailable(InvalidJwt):
    """No signing keys could be had, so no token can be judged: answer 503, not 401.

    ``retry_after_s`` says when the verifier will next ask the provider.
    """

    def __init__(self, reason: str, *, retry_after_s: float) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class _JwksFetchFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """What a verified token says about its caller.

    ``caller`` is the ``client_claim`` value, or else ``azp``, or else ``sub``: the
    first that is a non-empty string. ``expires_at`` is the token's ``exp`` on the
    wall clock.
    """

    caller: str
    scopes: frozenset[str]
    grants: frozenset[str]
    expires_at: float


class JwtVerifier:
    """Verifies JWTs for one ``[inbound.jwt]`` table; the session is the caller's.

    When the JWKS endpoint fails, keys already fetched stay in use for as long as it
    keeps failing; a token naming a key id they lack is then refused as unknown.
    """

    def __init__(
        self,
        config: InboundJwtConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock
        # Not strict: identity providers add header parameters of their own.
        self._registry = JWSRegistry(
            algorithms=config.algorithms, strict_check_header=False
        )
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        self._keys_stale_at = 0.0
        self._attempted_at: float | None = None
        self._attempts = 0
        self._failing = False

    async def verify(self, token: str) -> VerifiedJwt:
        """The verified token's caller, scopes and grants.

        Raises ``InvalidJwt`` for a refused token, and its subclass
        ``JwksUnavailable`` when no signing keys could be fetched at all.
        """
        signed = self._parse(token)
        header = signed.headers()
        alg = header["alg"]
        if alg not in self._config.algorithms:
            raise InvalidJwt("algorithm not allowed")

        key = await self._signing_key(header.get("kid"), alg)
        self._check_signature(signed, key)

        claims = _claims(signed)
        return self._check_claims(claims)

    def _parse(self, token: str) -> CompactSignature:
        try:
            signed = extract_compact(token.encode(), registry=self._registry)
            self._registry.check_header(signed.headers())
        except (JoseError, ValueError):
            raise InvalidJwt("token is not a JWT") from None
        return signed

    async def _signing_key(self, kid: str | None, alg: str) -> Key:
        attempts = self._attempts
        keys = self._keys
        if keys is None or self._clock() >= self._keys_stale_at:
            keys = await self._refresh(attempts)
        key = _pick_key(keys, kid, alg)

        if key is None and kid is not None:
            # An unknown kid may be a rotated key the provider published since.
            key = _pick_key(await self._refresh(self._attempts), kid, alg)
        if key is None:
            raise InvalidJwt("unknown key id")
        return key

    async def _refresh(self, attempts_seen: int) -> KeySet:
        async with self._lock:
            if self._attempts == attempts_seen and self._retry_after_s() == 0:
                await self._fetch()
            if self._keys is None:
                raise JwksUnavailable(
                    "signing keys unavailable", retry_after_s=self._retry_after_s()
                )
            return self._keys

    def _retry_after_s(self) -> float:
        if self._attempted_at is None:
            return 0.0
        next_at = self._attempted_at + self._config.jwks_refetch_min_interval_s
        return max(0.0, next_at - self._clock())

    async def _fetch(self) -> None:
        started = self._clock()
        try:
            keys = await self._download()
        except _JwksFetchFailed as exc:
            self._record_attempt(started)
            if not self._failing:
                self._failing = True
                log.warning(
                    "inbound.jwks_refresh_failed",
                    reason=exc.reason,
                    has_cached_keys=self._keys is not None,
                )
            return

        self._record_attempt(started)
        self._keys = keys
        self._keys_stale_at = self._clock() + self._config.jwks_cache_s
        self._failing = False
        log.info("inbound.jwks_refreshed", keys=len(keys.keys))

    def _record_attempt(self, started: float) -> None:
        self._attempted_at = started
        self._attempts += 1

    async def _download(self) -> KeySet:
        timeout_s = self._config.jwks_timeout_s
        try:
            async with self._session.get(
                self._config.jwks_url,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise _JwksFetchFailed(f"JWKS endpoint answered {response.status}")
                body = await _read_capped(response)
        except TimeoutError:
            raise _JwksFetchFailed(
                f"JWKS endpoint did not answer within {timeout_s:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise _JwksFetchFailed(
                f"JWKS endpoint unreachable ({type(exc).__name__})"
            ) from None
        return _import_key_set(body)

    def _check_signature(self, signed: CompactSignature, key: Key) -> None:
        with warnings.catch_warnings():
            # joserfc warns on each use of "EdDSA" (RFC 9864 prefers "Ed25519");
            # the operator chose it in config, so the warning says nothing new.
            warnings.filterwarnings(
                "ignore", "EdDSA is deprecated", category=SecurityWarning
            )
            try:
                valid = validate_compact(signed, key, registry=self._registry)
            except JoseError:
                valid = False
        if not valid:
            raise InvalidJwt("signature invalid")

    def _check_claims(self, claims: dict[str, Any]) -> VerifiedJwt:
        config = self._config
        if claims.get("iss") != config.issuer:
            raise InvalidJwt("wrong issuer")
        aud = claims.get("aud")
        if not (
            aud == config.audience or (isinstance(aud, list) and config.audience in aud)
        ):
            raise InvalidJwt("wrong audience")

        # RFC 7519 §4.1.4: not accepted on or after exp; leeway for clock skew.
        now = self._wall_clock()
        exp = _time_claim(claims, "exp")
        if exp is None:
            raise InvalidJwt("token has no expiry")
        if now >= exp + config.leeway_s:
            raise InvalidJwt("token expired")
        for name in ("nbf", "iat"):
            at = _time_claim(claims, name)
            if at is not None and at > now + config.leeway_s:
                raise InvalidJwt("token not yet valid")

        caller = next(
            (
                value
                for name in (config.client_claim, "azp", "sub")
                if isinstance(value := claims.get(name), str) and value
            ),
            None,
        )
        if caller is None:
            raise InvalidJwt("missing client claim")

        scopes = self._scopes(claims)
        grants = {
            grant for scope in scopes for grant in config.scope_grants.get(scope, [])
        }
        return VerifiedJwt(caller, scopes, frozenset(grants), exp)

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        # RFC 9068 §2.2.3 and RFC 8693 §4.2: a space-separated string; some providers
        # send a list, and Azure AD and Okta name the claim "scp".
        name = self._config.scope_claim
        value = claims.get(name) if name in claims else claims.get("scp")
        if value is None:
            return frozenset()
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return frozenset(value)
        raise InvalidJwt("malformed scope claim")


def _claims(signed: CompactSignature) -> dict[str, Any]:
    try:
        claims = json.loads(signed.payload)
    except ValueError:
        raise InvalidJwt("token is not a JWT") from None
    if not isinstance(claims, dict):
        raise InvalidJwt("token is not a JWT")
    return claims


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NaN would never compare as expired; json.loads accepts it.
    try:
        if isinstance(value, bool) or not math.isfinite(value):
            raise TypeError
    except (TypeError, OverflowError):
        raise InvalidJwt(f"malformed {name} claim") from None
    return float(value)


def _pick_key(keys: KeySet, kid: str | None, alg: str) -> Key | None:
    """The key named ``kid`` that can check ``alg``; without a kid, the only one."""
    kty = _KEY_TYPES[alg[:2]]
    fitting = [key for key in keys if key.key_type == kty and key.alg in (None, alg)]
    if kid is None:
        return fitting[0] if len(fitting) == 1 else None
    return next((key for key in fitting if key.kid == kid), None)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > _MAX_JWKS_BYTES:
            raise _JwksFetchFailed(f"JWKS larger than {_MAX_JWKS_BYTES} bytes")
    return bytes(body)


def _import_key_set(body: bytes) -> KeySet:
    """The signing keys of a JWKS document; keys of other kinds are skipped."""
    try:
        document = json.loads(body)
    except ValueError:
        raise _JwksFetchFailed("JWKS endpoint answered 200 without JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _JwksFetchFailed("JWKS document has no keys list")

    keys: list[Key] = []
    for entry in entries:
        # RFC 7517 §5: skip keys not understood; "oct" is never a public key.
        usable = isinstance(entry, dict) and entry.get("use", "sig") == "sig"
        if not usable or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        try:
            keys.append(JWKRegistry.import_key(entry))
        except (JoseError, ValueError, TypeError):
            continue
    if not keys:
        raise _JwksFetchFailed("JWKS holds no usable signing key")
    return KeySet(keys)
