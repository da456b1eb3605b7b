"""The ``[token_store]`` table: where token holders keep the token they share.

``kind = "memory"`` (the default) keeps each replica's tokens to itself. ``kind =
"redis"`` lets every replica of an estate share one token per token source through
Redis: one primary at ``url`` (TLS and password through the URL), a Redis Cluster
(``cluster = true``, ``url`` naming any node) or a primary found through Sentinel
(``sentinels`` and ``sentinel_master``, since redis-py has no URL scheme for it).

Tokens are encrypted at rest with the Fernet key in ``INVENTORY_PROXY_TOKEN_KEY``;
a Redis store without a usable key stops start-up here, naming this table and the
variable. The URL may carry a password, so it is a secret and no message repeats it.
"""

from __future__ import annotations

import os
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from proxy.config_fields import NonNegativeSeconds, PositiveSeconds, Section
from proxy.token_store import TOKEN_KEY_ENV, TokenKeyError, token_cipher_from_env

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_REDIS_ONLY = (
    "url",
    "cluster",
    "sentinels",
    "sentinel_master",
    "password",
)


class TokenStoreConfig(Section):
    """Where tokens live: in each process, or shared by every replica in Redis."""

    kind: Literal["memory", "redis"] = "memory"
    url: SecretStr | None = None
    cluster: bool = False
    sentinels: list[str] = Field(default_factory=list)
    sentinel_master: str | None = None
    password: SecretStr | None = None
    db: int = Field(default=0, ge=0)
    key_prefix: str = Field(default="inventory-proxy", pattern=r"^[A-Za-z0-9_.:-]+$")
    operation_timeout_s: PositiveSeconds = 0.25
    lock_lease_s: PositiveSeconds = 15.0
    wait_for_peer_s: NonNegativeSeconds = 2.0
    reprobe_interval_s: PositiveSeconds = 5.0

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = URL(value.get_secret_value()).scheme
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"must be a redis://, rediss:// or unix:// URL (scheme {scheme!r})"
            )
        return value

    @field_validator("sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} must read 'host:port'")
        return value

    @model_validator(mode="after")
    def _redis_has_what_it_needs(self) -> Self:
        if self.kind == "memory":
            if given := [key for key in _REDIS_ONLY if getattr(self, key)]:
                raise ValueError(f'{", ".join(given)} apply to kind = "redis" only')
            return self

        if (self.url is None) == (not self.sentinels):
            raise ValueError('kind = "redis" needs exactly one of url or sentinels')
        if bool(self.sentinels) != (self.sentinel_master is not None):
            raise ValueError("sentinels and sentinel_master go together")
        if self.cluster and self.url is None:
            raise ValueError("cluster = true needs url, naming any node")
        if self.url is not None and (self.password is not None or self.db):
            raise ValueError("with url, the password and db go in the URL")
        if self.lock_lease_s <= self.operation_timeout_s:
            raise ValueError("lock_lease_s must be longer than operation_timeout_s")
        try:
            token_cipher_from_env(os.environ)
        except TokenKeyError as exc:
            raise ValueError(f'kind = "redis" needs {TOKEN_KEY_ENV}: {exc}') from None
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``sentinels`` as (host, port) pairs."""
        pairs = [address.rpartition(":") for address in self.sentinels]
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]
