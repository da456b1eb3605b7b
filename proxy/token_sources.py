"""How a token is obtained: OAuth2 client credentials (RFC 6749 §4.4).

A source knows one token endpoint and one client; it sends a request and turns the
answer into a ``TokenGrant`` or a ``TokenFetchError`` whose reason is safe to log.
It holds no state between requests: caching, single flight and back-off belong to
the ``TokenHolder`` in front of it.
"""

from __future__ import annotations

import base64
import json
import time
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import aiohttp

from proxy.config import TokenSourceConfig
from proxy.tokens import TokenFetchError, TokenGrant

_ERROR_BODY_LIMIT = 64 * 1024


def client_secret_basic(client_id: str, client_secret: str) -> str:
    """The Authorization header value for ``client_secret_basic``.

    RFC 6749 §2.3.1 form-urlencodes the id and the secret before joining them with a
    colon, so a secret holding ``:``, ``+``, ``/`` or ``%`` survives the trip. authlib's
    client encodes the raw values and would garble such a secret, hence our own.
    """
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class ClientCredentialsSource:
    """An OAuth2 client-credentials client for one token endpoint."""

    def __init__(self, config: TokenSourceConfig, session: aiohttp.ClientSession):
        self._config = config
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)

    async def fetch_token(self) -> TokenGrant:
        """Request a token; raises ``TokenFetchError`` with a loggable reason."""
        config = self._config
        form = config.form_params()
        headers = {"Accept": "application/json"}
        secret = config.read_client_secret()
        if config.auth_method == "client_secret_basic":
            headers["Authorization"] = client_secret_basic(config.client_id, secret)
        else:
            form.update(client_id=config.client_id, client_secret=secret)

        requested_at = time.monotonic()
        try:
            async with self._session.post(
                config.token_url,
                data=form,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.content.read(_ERROR_BODY_LIMIT + 1)
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
                f"token endpoint answered {status}{_oauth_error(body)}",
                retry_after_s=retry_after_s if status in (429, 503) else None,
            )
        return _parse_grant(body, requested_at)


def _parse_grant(body: bytes, requested_at: float) -> TokenGrant:
    try:
        answer = json.loads(body)
    except ValueError:
        raise TokenFetchError("token endpoint answered 200 without JSON") from None
    if not isinstance(answer, dict):
        raise TokenFetchError("token endpoint answered 200 with a non-object JSON")

    value = answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenFetchError("token endpoint answer has no access_token")
    token_type = answer.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenFetchError(f"token endpoint issued token_type {token_type!r}")

    expires_in = answer.get("expires_in")
    if expires_in is not None:
        # Some providers send the number as a string; RFC 6749 §5.1 says a number.
        try:
            expires_in = float(expires_in)
        except (TypeError, ValueError):
            raise TokenFetchError("token endpoint answered a bad expires_in") from None
    scope = answer.get("scope")
    return TokenGrant(
        value=value,
        token_type="Bearer",  # noqa: S106 - a token type, not a secret
        expires_in_s=expires_in,
        requested_at=requested_at,
        scope=scope if isinstance(scope, str) else None,
    )


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
