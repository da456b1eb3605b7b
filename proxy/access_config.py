"""Who may call the proxy: the ``[clients.NAME]`` and ``[inbound.jwt]`` tables.

Callers inside ``server.trusted_networks`` (the OMS beside the sidecar) need no
credentials. Every other caller is a partner that must authenticate, with an API key
listed here by its SHA-256 digest, or with a JWT from the partner identity provider
described in ``[inbound.jwt]``, and is then allowed only what it was granted.

A grant reads ``UPSTREAM:METHOD``: ``"inventory:POST"``, ``"delivery:GET"``, and
``*`` for either part (``"price:*"``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from proxy.config_fields import (
    NonNegativeSeconds,
    PositiveSeconds,
    Section,
    check_http_url,
)

_DIGEST = re.compile(r"[0-9a-f]{64}")
_GRANT = re.compile(r"(\*|[A-Za-z0-9_.-]+):(\*|[A-Z]+)")
JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


def check_grants(grants: list[str]) -> list[str]:
    """Grants in ``UPSTREAM:METHOD`` form; the upstream names are checked later."""
    for grant in grants:
        if not _GRANT.fullmatch(grant):
            raise ValueError(
                f"grant {grant!r} must read UPSTREAM:METHOD, e.g. 'inventory:POST' "
                "or 'price:*'"
            )
    return grants


def _default_algorithms() -> list[JwtAlgorithm]:
    return ["RS256", "ES256"]


class RateLimitConfig(Section):
    """A token bucket: ``rate_per_s`` sustained, ``burst`` at once."""

    rate_per_s: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)


class ClientConfig(RateLimitConfig):
    """A partner that authenticates with an API key."""

    api_key_sha256: list[str] = Field(min_length=1)
    allow: list[str] = Field(min_length=1)

    @field_validator("api_key_sha256")
    @classmethod
    def _digests_are_sha256_hex(cls, value: list[str]) -> list[str]:
        for digest in value:
            if not _DIGEST.fullmatch(digest):
                raise ValueError(
                    "each entry must be a lowercase hex SHA-256 digest (64 digits); "
                    "'inventory-proxy new-api-key' prints a key and its digest"
                )
        return value

    @field_validator("allow")
    @classmethod
    def _grants_are_well_formed(cls, value: list[str]) -> list[str]:
        return check_grants(value)


class InboundJwtConfig(RateLimitConfig):
    """Partners that present a JWT from their identity provider (RFC 9068 style).

    The caller is named by ``client_claim``; its grants come from the token's scopes
    through ``scope_grants``; each caller has its own rate-limit bucket.
    """

    jwks_url: str
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: list[JwtAlgorithm] = Field(default_factory=_default_algorithms)
    leeway_s: NonNegativeSeconds = 30.0
    jwks_cache_s: PositiveSeconds = 300.0
    jwks_refetch_min_interval_s: NonNegativeSeconds = 30.0
    jwks_timeout_s: PositiveSeconds = 5.0
    client_claim: str = "client_id"
    scope_claim: str = "scope"
    scope_grants: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str) -> str:
        return check_http_url(value, allow_query=True)

    @field_validator("algorithms")
    @classmethod
    def _some_algorithm(cls, value: list[JwtAlgorithm]) -> list[JwtAlgorithm]:
        if not value:
            raise ValueError("name at least one algorithm")
        return value

    @field_validator("scope_grants")
    @classmethod
    def _grants_are_well_formed(
        cls, value: dict[str, list[str]]
    ) -> dict[str, list[str]]:
        for grants in value.values():
            check_grants(grants)
        return value


class InboundConfig(Section):
    """Inbound authentication other than API keys."""

    jwt: InboundJwtConfig | None = None
