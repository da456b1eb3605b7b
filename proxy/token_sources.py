"""How a token is obtained: OAuth2 client credentials (RFC 6749 §4.4) and kin.

A source knows one token endpoint and one client; it sends one request and turns the
answer into a ``TokenGrant``, or a ``TokenFetchError`` whose reason is safe to log.
Standard endpoints take a form and answer ``access_token``/``expires_in``; for those
that take JSON or nest the token elsewhere, the request format and the field paths
come from the config. A source holds no state between requests: caching, single
flight, back-off and the budget belong to the ``TokenHolder`` in front of it.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from proxy.client_auth import (
    ClientAuthentication,
    KeyFileError,
    TlsContextCache,
    parse_signing_key,
)
from proxy.secret_files import SecretFileError, WatchedFile
from proxy.source_config import OAuth2SourceConfig
from proxy.tokens import TokenFetchError, TokenGrant

_ANSWER_LIMIT = 64 * 1024


class ClientCredentialsSource:
    """An OAuth2 client-credentials client for one token endpoint."""

    def __init__(
        self, config: OAuth2SourceConfig, session: aiohttp.ClientSession
    ) -> None:
        self._config = config
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._auth = client_authentication(config)
        self._tls = TlsContextCache(
            config.ca_file,
            config.tls_client_cert_file,
            config.tls_client_key_file,
            verify=config.tls_verify,
        )

    async def fetch_token(self) -> TokenGrant:
        """Request a token; raises ``TokenFetchError`` with a loggable reason."""
        config = self._config
        params = config.token_params()
        headers = {"Accept": "application/json"}
        try:
            self._auth.apply(params, headers)
            ssl_context = self._tls.context()
        except (SecretFileError, KeyFileError, OSError) as exc:
            raise TokenFetchError(f"client credentials unusable: {exc}") from None
        body: dict[str, Any] = (
            {"json": params} if config.request_format == "json" else {"data": params}
        )

        requested_at = time.monotonic()
        try:
            async with self._session.post(
                config.token_url,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                ssl=ssl_context if ssl_context is not None else True,
                **body,
            ) as response:
                answer = await read_bounded(response.content, _ANSWER_LIMIT)
                status = response.status
                retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            raise TokenFetchError(
                f"token endpoint did not answer within {config.timeout_s:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise TokenFetchError(
                f"token endpoint unreachable ({type(exc).__name__})"
            ) from None

        if status != 200:
            raise TokenFetchError(
                f"token endpoint answered {status}{_oauth_error(answer)}",
                retry_after_s=retry_after_s if status in (429, 503) else None,
            )
        return self._grant(answer, requested_at)

    def _grant(self, answer: bytes, requested_at: float) -> TokenGrant:
        config = self._config
        try:
            document = json.loads(answer)
        except ValueError:
            raise TokenFetchError("token endpoint answered 200 without JSON") from None

        value = field_at(document, config.token_field)
        if not isinstance(value, str) or not value:
            raise TokenFetchError(f"token endpoint answer has no {config.token_field}")
        token_type = field_at(document, config.token_type_field) or "Bearer"
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenFetchError(f"token endpoint issued token_type {token_type!r}")

        lifetime = field_at(document, config.expires_in_field)
        expires_in: float | None = None
        if lifetime is not None:
            # Some providers send the number as a string; RFC 6749 §5.1 says a number.
            try:
                if isinstance(lifetime, bool) or not isinstance(
                    lifetime, int | float | str
                ):
                    raise TypeError
                expires_in = float(lifetime)
            except (TypeError, ValueError):
                raise TokenFetchError(
                    f"token endpoint answered a bad {config.expires_in_field}"
                ) from None
        scope = field_at(document, "scope")
        return TokenGrant(
            value=value,
            token_type="Bearer",  # noqa: S106 - a token type, not a secret
            expires_in_s=expires_in,
            requested_at=requested_at,
            scope=scope if isinstance(scope, str) else None,
        )


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or TokenFetchError once it exceeds ``limit`` bytes.

    ``StreamReader.read(n)`` returns what is buffered, which may be a part of an
    answer split across packets; this reads until the end.
    """
    body = bytearray()
    async for chunk in stream.iter_any():
        body += chunk
        if len(body) > limit:
            raise TokenFetchError(f"token endpoint answer exceeds {limit} bytes")
    return bytes(body)


def client_authentication(config: OAuth2SourceConfig) -> ClientAuthentication:
    """The configured client authentication, with its files watched for rotation."""
    secret: WatchedFile[str] | str | None = None
    if config.client_secret_file is not None:
        secret = WatchedFile(config.client_secret_file, str)
    elif config.client_secret is not None:
        secret = config.client_secret.get_secret_value()
    alg = config.jwt_alg
    signing_key = None
    if config.private_key_file is not None:
        signing_key = WatchedFile(
            config.private_key_file, lambda pem: parse_signing_key(pem, alg)
        )
    return ClientAuthentication(
        client_id=config.client_id,
        method=config.auth_method,
        audience=config.assertion_audience or config.token_url,
        secret=secret,
        signing_key=signing_key,
        signing_alg=alg,
        key_id=config.key_id,
        assertion_lifetime_s=config.assertion_lifetime_s,
    )


def field_at(document: object, path: str) -> object:
    """The value at a dotted ``path`` in a JSON document, or None."""
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def _oauth_error(body: bytes) -> str:
    """The RFC 6749 §5.2 ``error`` code from an error answer, if it has one.

    Only the code is kept: descriptions are free text a provider may fill with
    anything, and they are not ours to log.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, str) and error.isascii() and len(error) <= 64:
        return f" {error}"
    return ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 §10.2.3), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
