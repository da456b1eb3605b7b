"""The ``[token_sources.NAME]`` tables: where and how each token is obtained.

Two kinds. ``oauth2`` (the default) is a client-credentials client: any of the five
common client authentication methods, and for token endpoints that are not quite
OAuth2, a JSON request body and the token's field paths in the answer. ``static``
is a fixed credential such as an API key, for upstreams that take one, so that every
upstream of an estate can sit behind the same proxy.

Each method's required settings are checked here, so that a missing key file or a
secret given to a method that does not use it stops start-up with the key's name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from proxy.client_auth import KeyFileError, parse_signing_key
from proxy.config_fields import (
    NonNegativeSeconds,
    PositiveSeconds,
    Section,
    check_http_url,
)
from proxy.secret_files import SecretFileError, read_secret_file

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
]
SECRET_METHODS = frozenset(
    {"client_secret_basic", "client_secret_post", "client_secret_jwt"}
)
_NAMED_PARAMS = frozenset(
    {"grant_type", "client_id", "client_secret", "scope", "audience", "resource"}
)
_AUTH_PARAMS = frozenset({"client_assertion", "client_assertion_type"})


def _readable(path: Path | None) -> Path | None:
    if path is not None:
        try:
            read_secret_file(path)
        except SecretFileError as exc:
            raise ValueError(str(exc)) from None
    return path


class OAuth2SourceConfig(Section):
    """A client-credentials client (RFC 6749 §4.4) at one token endpoint."""

    kind: Literal["oauth2"] = "oauth2"
    token_url: str
    client_id: str = Field(min_length=1)
    auth_method: AuthMethod = "client_secret_basic"
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    signing_alg: Literal["HS256", "RS256", "ES256"] | None = None
    assertion_audience: str | None = None
    assertion_lifetime_s: PositiveSeconds = 60.0
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    ca_file: Path | None = None
    tls_verify: bool = True
    request_format: Literal["form", "json"] = "form"
    token_field: str = "access_token"  # noqa: S105 - a field name, not a secret
    expires_in_field: str = "expires_in"
    token_type_field: str = "token_type"  # noqa: S105 - a field name
    scope: str | None = None
    audience: str | None = None
    resource: str | None = None
    extra_params: dict[str, str] = Field(default_factory=dict)
    refresh_margin_s: NonNegativeSeconds = 30.0
    default_ttl_s: PositiveSeconds = 300.0
    timeout_s: PositiveSeconds = 10.0
    backoff_initial_s: PositiveSeconds = 1.0
    backoff_max_s: PositiveSeconds = 60.0
    cold_start_wait_s: NonNegativeSeconds = 5.0
    max_token_requests_per_hour: int | None = Field(default=600, ge=1)

    @field_validator("token_url", "assertion_audience")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, allow_query=True)

    @field_validator(
        "client_secret_file",
        "private_key_file",
        "tls_client_cert_file",
        "tls_client_key_file",
        "ca_file",
    )
    @classmethod
    def _file_is_readable(cls, value: Path | None) -> Path | None:
        return _readable(value)

    @field_validator("extra_params")
    @classmethod
    def _extra_params_do_not_shadow(cls, value: dict[str, str]) -> dict[str, str]:
        if clash := sorted((_NAMED_PARAMS | _AUTH_PARAMS) & value.keys()):
            raise ValueError(f"must not set {', '.join(clash)}; use the named keys")
        return value

    @model_validator(mode="after")
    def _method_has_what_it_needs(self) -> Self:
        method = self.auth_method
        has_secret = self.client_secret is not None
        has_secret_file = self.client_secret_file is not None
        if method in SECRET_METHODS and has_secret == has_secret_file:
            raise ValueError(
                f"{method} needs exactly one of client_secret or client_secret_file"
            )
        if method not in SECRET_METHODS and (has_secret or has_secret_file):
            raise ValueError(f"{method} uses no client secret; remove it")
        if (self.private_key_file is not None) != (method == "private_key_jwt"):
            raise ValueError("private_key_file goes with private_key_jwt, and only it")
        if (self.tls_client_cert_file is None) != (self.tls_client_key_file is None):
            raise ValueError("set tls_client_cert_file and tls_client_key_file both")
        if method == "tls_client_auth" and self.tls_client_cert_file is None:
            raise ValueError("tls_client_auth needs tls_client_cert_file and _key_file")
        self._check_signing()
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def _check_signing(self) -> None:
        alg = self.signing_alg
        if self.auth_method == "client_secret_jwt" and alg not in (None, "HS256"):
            raise ValueError("client_secret_jwt signs with HS256")
        key_file = self.private_key_file
        if self.auth_method == "private_key_jwt" and key_file is not None:
            if alg == "HS256":
                raise ValueError("private_key_jwt signs with RS256 or ES256")
            try:
                parse_signing_key(read_secret_file(key_file), self.jwt_alg)
            except (KeyFileError, SecretFileError) as exc:
                raise ValueError(f"private_key_file {exc}") from None

    @property
    def jwt_alg(self) -> str:
        """The assertion's signing algorithm, defaulted per method."""
        if self.signing_alg is not None:
            return self.signing_alg
        return "HS256" if self.auth_method == "client_secret_jwt" else "RS256"

    def token_params(self) -> dict[str, str]:
        """The token request's parameters other than client authentication."""
        params = {"grant_type": "client_credentials"}
        named = {"scope": self.scope, "audience": self.audience}
        named["resource"] = self.resource
        params.update({key: value for key, value in named.items() if value})
        params.update(self.extra_params)
        return params

    def request_key(self) -> str:
        """Everything that shapes this source's token request, as one string.

        Two sources with the same key get the same token, so they share a holder;
        any difference (another client, scope, audience or secret) keeps them apart.
        The secret enters only as a digest.
        """
        shaping = self.model_dump(
            mode="json",
            exclude={
                "refresh_margin_s",
                "default_ttl_s",
                "timeout_s",
                "backoff_initial_s",
                "backoff_max_s",
                "cold_start_wait_s",
                "max_token_requests_per_hour",
                "client_secret",
            },
        )
        if self.client_secret is not None:
            secret = self.client_secret.get_secret_value().encode()
            shaping["client_secret_sha256"] = hashlib.sha256(secret).hexdigest()
        return json.dumps(shaping, sort_keys=True)


class StaticSourceConfig(Section):
    """A fixed credential, such as an API key, sent as it is."""

    kind: Literal["static"]
    value: SecretStr | None = None
    value_file: Path | None = None

    @field_validator("value_file")
    @classmethod
    def _file_is_readable(cls, value: Path | None) -> Path | None:
        return _readable(value)

    @model_validator(mode="after")
    def _one_value(self) -> Self:
        if (self.value is None) == (self.value_file is None):
            raise ValueError("set exactly one of value or value_file")
        return self


def _source_kind(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("kind", "oauth2"))
    return str(getattr(raw, "kind", "oauth2"))


TokenSourceConfig = Annotated[
    Annotated[OAuth2SourceConfig, Tag("oauth2")]
    | Annotated[StaticSourceConfig, Tag("static")],
    Discriminator(_source_kind),
]
SOURCE_KINDS = frozenset({"oauth2", "static"})
