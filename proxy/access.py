"""Who is calling, and may they: inbound authentication and authorization.

The sidecar case needs nothing: callers inside ``server.trusted_networks`` are the
OMS and may use every upstream. Anyone else is a partner and must present an API key
(``X-API-Key``, or ``Authorization: Bearer``) whose SHA-256 digest a ``[clients]``
entry lists, or a JWT that ``[inbound.jwt]`` verifies. Keys are compared digest to
digest in constant time, against every digest, so neither a match nor its position
shows in the timing. A partner is then allowed only the ``UPSTREAM:METHOD`` grants it
holds, within its own rate limit.

The caller's address is the TCP peer, or, when the peer is one of
``server.trusted_proxies``, the nearest address in ``X-Forwarded-For`` that is not a
trusted proxy (the one hop that can vouch for it).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from aiohttp import web

from proxy.access_config import ClientConfig, InboundJwtConfig, RateLimitConfig
from proxy.config import Network, ProxyConfig
from proxy.errors import Forbidden, RateLimited, RetryLater, Unauthenticated
from proxy.inbound_jwt import InvalidJwt, JwksUnavailable, JwtVerifier
from proxy.observability import parse_address
from proxy.rate_limit import RateLimiter

Address = IPv4Address | IPv6Address
TRUSTED_GRANTS = frozenset({"*:*"})
# Peers remembered per policy; past this many, the memory starts again.
_REMEMBERED_PEERS = 4096


class SigningKeysUnavailable(RetryLater):
    """Partner JWTs cannot be checked now: the JWKS cannot be fetched."""

    status = 503
    code = "auth_unavailable"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: who, how, and what it may do."""

    name: str
    kind: str
    grants: frozenset[str]
    limits: RateLimitConfig | None = None

    def may(self, upstream: str, method: str) -> bool:
        grants = self.grants
        # "*:*" first: it is the trusted sidecar's grant, asked on every call.
        return (
            "*:*" in grants
            or f"{upstream}:{method}" in grants
            or f"{upstream}:*" in grants
            or f"*:{method}" in grants
        )


@dataclass(frozen=True, slots=True)
class Peer:
    """The caller's address as the policy reads it.

    ``shown`` is the address as logs write it, and ``trusted`` whether it lies in
    ``server.trusted_networks``.
    """

    address: Address | None
    shown: str | None
    trusted: bool


class AccessPolicy:
    """Authenticates callers and checks their grants and rate limits."""

    def __init__(self, config: ProxyConfig, jwt_verifier: JwtVerifier | None) -> None:
        self._trusted_networks = tuple(config.server.trusted_networks)
        self._trusted_proxies = tuple(config.server.trusted_proxies)
        self._clients = config.clients
        self._digests = [
            (bytes.fromhex(digest), name)
            for name, client in config.clients.items()
            for digest in client.api_key_sha256
        ]
        self._jwt: tuple[JwtVerifier, InboundJwtConfig] | None = None
        if jwt_verifier is not None and config.inbound.jwt is not None:
            self._jwt = (jwt_verifier, config.inbound.jwt)
        self._limiter = RateLimiter()
        self.network_caller = Caller("trusted", "network", TRUSTED_GRANTS)
        """Who any caller inside ``server.trusted_networks`` is."""
        self._peers: dict[str, Peer] = {}

    def peer(self, request: web.BaseRequest) -> Peer:
        """The caller, believing X-Forwarded-For only from trusted proxies."""
        remote = request.remote or ""
        if self._trusted_proxies:
            address = self.client_address(request)
            remote = "" if address is None else str(address)
        # The same few peers call again and again; reading one is not cheap.
        peer = self._peers.get(remote)
        if peer is None:
            if len(self._peers) >= _REMEMBERED_PEERS:
                self._peers.clear()
            address = parse_address(remote)
            peer = Peer(
                address,
                None if address is None else str(address),
                address is not None and _within(address, self._trusted_networks),
            )
            self._peers[remote] = peer
        return peer

    def client_address(self, request: web.BaseRequest) -> Address | None:
        """The caller's address, believing X-Forwarded-For only from trusted proxies."""
        peer = parse_address(request.remote)
        if peer is None or not _within(peer, self._trusted_proxies):
            return peer
        forwarded = [
            hop.strip()
            for value in request.headers.getall("X-Forwarded-For", ())
            for hop in value.split(",")
        ]
        for hop in reversed(forwarded):
            address = parse_address(hop)
            if address is None:
                return peer
            if not _within(address, self._trusted_proxies):
                return address
        return peer

    async def authenticate(self, request: web.BaseRequest, peer: Peer) -> Caller:
        """Who is calling; raises ``Unauthenticated`` (401) when nobody can tell."""
        if peer.trusted:
            return self.network_caller

        credential = request.headers.get("X-API-Key")
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if credential is None and scheme.lower() == "bearer" and bearer.strip():
            credential = bearer.strip()
        if not credential:
            raise Unauthenticated(
                "this caller must authenticate with an API key or a bearer token"
            )

        if (client := self._client_for_key(credential)) is not None:
            name, config = client
            return Caller(name, "api_key", frozenset(config.allow), config)
        if self._jwt is not None and credential.count(".") == 2:
            return await _jwt_caller(*self._jwt, credential)
        raise Unauthenticated("the credential is not valid", error="invalid_token")

    def authorize(self, caller: Caller, upstream: str, method: str) -> None:
        """Raise ``Forbidden`` (403) or ``RateLimited`` (429) unless the call may go."""
        if not caller.may(upstream, method):
            raise Forbidden(f"{caller.name} is not allowed {method} on {upstream}")
        if caller.limits is None:
            return
        wait_s = self._limiter.wait_s(caller.name, caller.limits)
        if wait_s > 0:
            raise RateLimited(
                f"{caller.name} exceeded {caller.limits.rate_per_s:g} requests per "
                "second",
                retry_after_s=wait_s,
            )

    def _client_for_key(self, key: str) -> tuple[str, ClientConfig] | None:
        presented = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for digest, name in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        return (found, self._clients[found]) if found is not None else None


async def _jwt_caller(
    verifier: JwtVerifier, config: InboundJwtConfig, token: str
) -> Caller:
    try:
        verified = await verifier.verify(token)
    except JwksUnavailable as exc:
        raise SigningKeysUnavailable(
            f"partner tokens cannot be checked now: {exc.reason}",
            retry_after_s=exc.retry_after_s,
        ) from None
    except InvalidJwt as exc:
        raise Unauthenticated(
            f"the bearer token was refused: {exc.reason}", error="invalid_token"
        ) from None
    return Caller(f"jwt:{verified.caller}", "jwt", verified.grants, config)


@functools.lru_cache(maxsize=4096)
def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    """Cached: the same few peers call again and again, and membership is slow."""
    return any(address in network for network in networks)
