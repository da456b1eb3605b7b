"""The proxy's typed configuration: TOML in, validated models out.

Everything that can be wrong with a configuration is found here, at start-up, and
reported with the dotted key that is wrong (``token_sources.iv.token_url``) so that a
bad deploy stops before it takes traffic. ``${VAR}`` placeholders are filled from the
environment before validation and ``*_file`` secrets are read, so a secret never has
to live in the file itself. Secret values are kept in ``SecretStr`` and never appear in
an error message.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from proxy.access_config import ClientConfig, InboundConfig
from proxy.config_fields import (
    NonNegativeSeconds,
    PositiveSeconds,
    Section,
    check_http_url,
)
from proxy.source_config import SOURCE_KINDS, TokenSourceConfig
from proxy.store_config import TokenStoreConfig

RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/tokens"})
ADMIN = "admin"  # the grant name of the proxy's own operator endpoints
LOOPBACK_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = (
    IPv4Network("127.0.0.0/8"),
    IPv6Network("::1/128"),
)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")
_SECRET_KEY = re.compile(r"secret|password|token$|key$|value$", re.IGNORECASE)


class ConfigError(Exception):
    """A configuration that cannot run; ``problems`` pairs each bad key with why."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{key}: {why}" if key else why for key, why in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


Network = IPv4Network | IPv6Network


class ServerConfig(Section):
    """Where the proxy listens and what it accepts.

    Callers inside ``trusted_networks`` need no credentials; every other caller must
    authenticate as a ``[clients]`` entry or with an inbound JWT, so binding a wider
    address never exposes the upstreams, with their tokens attached, to anyone who
    can reach the port. ``X-Forwarded-For`` is believed only from
    ``trusted_proxies``.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    trusted_networks: list[Network] = Field(
        default_factory=lambda: list(LOOPBACK_NETWORKS)
    )
    trusted_proxies: list[Network] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    shutdown_grace_s: NonNegativeSeconds = 10.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_file_is_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set tls_cert_file and tls_key_file both, or neither")
        return self


class LogConfig(Section):
    """How log lines look: JSON lines for machines, console for people."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class UpstreamConfig(Section):
    """A service behind the proxy: the path prefix it owns and where calls go."""

    path_prefix: str
    base_url: str
    token_source: str
    timeout_s: PositiveSeconds = 10.0
    connect_timeout_s: PositiveSeconds = 5.0
    auth_header: str = Field(default="Authorization", pattern=r"^[A-Za-z0-9-]+$")
    auth_format: str = "Bearer {token}"
    stand_in_token_path: str | None = None
    stand_in_token_lifetime_s: PositiveSeconds = 43200.0
    ca_file: Path | None = None
    tls_verify: bool = True
    share_identical: list[str] = Field(default_factory=list)
    cache_ttl_s: NonNegativeSeconds = 0.0
    cache_max_entries: int = Field(default=10_000, ge=1)

    @field_validator("share_identical")
    @classmethod
    def _rules_read_method_and_path(cls, value: list[str]) -> list[str]:
        for rule in value:
            method, _, pattern = rule.partition(" ")
            if not re.fullmatch(r"[A-Z]+", method) or not pattern.startswith("/"):
                raise ValueError(
                    f"{rule!r} must read 'METHOD /path/pattern', e.g. "
                    "'POST /*/v1/availability/*' (* is one path segment)"
                )
        return value

    @model_validator(mode="after")
    def _cache_needs_sharing(self) -> Self:
        if self.cache_ttl_s > 0 and not self.share_identical:
            raise ValueError(
                "cache_ttl_s applies to share_identical requests; list them too"
            )
        return self

    @field_validator("ca_file")
    @classmethod
    def _ca_file_is_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix_is_a_clean_path(cls, value: str) -> str:
        if not value.startswith("/") or value == "/":
            raise ValueError(f"must start with '/' and name a path, got {value!r}")
        value = value.rstrip("/")
        if any(char in value for char in "?#%\\ "):
            raise ValueError(f"must be a plain path (no ?, #, % or space): {value!r}")
        if any(segment in ("", ".", "..") for segment in value.split("/")[1:]):
            raise ValueError(f"must not contain empty, '.' or '..' segments: {value!r}")
        if value in RESERVED_PATHS:
            raise ValueError(f"{value} is the proxy's own endpoint")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        return check_http_url(value, allow_query=False).rstrip("/")

    @field_validator("auth_format")
    @classmethod
    def _format_places_the_token_once(cls, value: str) -> str:
        if value.count("{token}") != 1:
            raise ValueError(f"must contain {{token}} exactly once, got {value!r}")
        return value

    @field_validator("stand_in_token_path")
    @classmethod
    def _pattern_is_a_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "**" in value):
            raise ValueError(
                f"must be a path under path_prefix like '/*/v1/oauth2/token', "
                f"got {value!r}"
            )
        return value


class ProxyConfig(Section):
    """The whole configuration, with references between sections checked."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    token_sources: dict[str, TokenSourceConfig] = Field(default_factory=dict)
    upstreams: dict[str, UpstreamConfig] = Field(min_length=1)
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    inbound: InboundConfig = Field(default_factory=InboundConfig)
    token_store: TokenStoreConfig = Field(default_factory=TokenStoreConfig)

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        problems = self._grant_problems()
        if ADMIN in self.upstreams:
            problems.append(
                (f"upstreams.{ADMIN}", "is reserved for the proxy's own endpoints")
            )
        prefixes: dict[str, str] = {}
        for name, upstream in self.upstreams.items():
            if upstream.token_source not in self.token_sources:
                known = ", ".join(sorted(self.token_sources)) or "none"
                problems.append(
                    (
                        f"upstreams.{name}.token_source",
                        f"names {upstream.token_source!r}, which is not a "
                        f"[token_sources] entry (known: {known})",
                    )
                )
            if (other := prefixes.get(upstream.path_prefix)) is not None:
                problems.append(
                    (
                        f"upstreams.{name}.path_prefix",
                        f"{upstream.path_prefix} is already upstreams.{other}'s",
                    )
                )
            prefixes[upstream.path_prefix] = name
        if problems:
            raise ConfigError(problems)
        return self

    def _grant_problems(self) -> list[tuple[str, str]]:
        grants = [
            (f"clients.{name}.allow", grant)
            for name, client in self.clients.items()
            for grant in client.allow
        ]
        if self.inbound.jwt is not None:
            grants += [
                (f"inbound.jwt.scope_grants.{scope}", grant)
                for scope, scope_grants in self.inbound.jwt.scope_grants.items()
                for grant in scope_grants
            ]
        problems = []
        known = ", ".join(sorted(self.upstreams))
        for key, grant in grants:
            upstream = grant.partition(":")[0]
            if upstream not in {"*", ADMIN} and upstream not in self.upstreams:
                problems.append((key, f"{grant!r} names no upstream (known: {known})"))

        owners: dict[str, str] = {}
        for name, client in self.clients.items():
            for digest in client.api_key_sha256:
                if (other := owners.setdefault(digest, name)) != name:
                    problems.append(
                        (f"clients.{name}.api_key_sha256", f"repeats clients.{other}'s")
                    )
        return problems


def load_config(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """Read, expand and validate the TOML file at ``path``.

    Raises ``ConfigError`` naming each bad key; nothing else escapes.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    return parse_config(text, environ, origin=str(path))


def parse_config(
    text: str,
    environ: Mapping[str, str] | None = None,
    *,
    origin: str = "<config>",
) -> ProxyConfig:
    """Validate TOML ``text``; ``environ`` fills ``${VAR}`` (default: os.environ)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{origin} is not valid TOML: {exc}")]) from None
    expanded = _expand(raw, os.environ if environ is None else environ, ())
    try:
        return ProxyConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _expand(value: Any, environ: Mapping[str, str], key: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, environ, (*key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, (*key, str(i))) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in environ:
            raise ConfigError(
                [(".".join(key), f"environment variable {name} is not set")]
            )
        return environ[name]

    return _PLACEHOLDER.sub(substitute, value)


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "token_sources" and loc[2] in SOURCE_KINDS:
            del loc[2]  # the union's tag, not a key the user wrote
        key = ".".join(str(part) for part in loc)
        context = error.get("ctx", {}).get("error")
        if context is not None:
            message = str(context)
        elif error["type"] == "extra_forbidden":
            message = "is not a known setting"
        elif error["type"] == "missing":
            message = "is required"
        elif _SECRET_KEY.search(key) or isinstance(error["input"], dict | list):
            message = error["msg"]
        else:
            message = f"{error['msg']} (got {error['input']!r})"
        problems.append((key, message))
    return problems
