"""What every demo upstream shares: the bearer check and the record of calls.

An upstream app made by `protected_app` records each request that reaches it, authorized
or not, before it checks `Authorization: Bearer <token>` with a verifier (normally
`IdentityProvider.verify`). A request without a valid token never reaches a handler and
gets a 401 shaped after RFC 6750 section 3. The services themselves live in
`inventory`, `pricing` and `promising`; this module also holds the JSON helpers they use
to read request bodies strictly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "InvalidBody",
    "JsonObject",
    "RecordedCall",
    "TokenVerifier",
    "UpstreamRecorder",
    "protected_app",
    "read_json_object",
    "require_list",
    "require_str",
]

TokenVerifier = Callable[[str], bool]
"""Answers whether a bearer token is currently valid."""

JsonObject = dict[str, object]


@dataclass(frozen=True)
class RecordedCall:
    """One request as an upstream received it.

    `path_qs` is the raw request target (path and query, as sent). `headers` is a
    read-only copy and includes `Authorization`; the repr leaves headers and body out
    so that a failing assertion does not print a token.
    """

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str] = field(repr=False)
    body: bytes = field(repr=False)
    authorized: bool

    @property
    def bearer_token(self) -> str | None:
        """The bearer token the request carried, if any."""
        return _bearer_token(self.headers.get(hdrs.AUTHORIZATION))

    def json(self) -> object:
        """The body parsed as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.body)


class UpstreamRecorder:
    """The calls one upstream received, in arrival order, with running counts."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[RecordedCall]:
        return iter(self.calls)

    @property
    def authorized(self) -> int:
        """How many recorded calls carried a valid token."""
        return sum(call.authorized for call in self.calls)

    @property
    def unauthorized(self) -> int:
        """How many recorded calls were refused with a 401."""
        return len(self.calls) - self.authorized

    @property
    def last(self) -> RecordedCall:
        """The most recent call; raises IndexError when none was recorded."""
        return self.calls[-1]

    def record(self, call: RecordedCall) -> None:
        """Append one call."""
        self.calls.append(call)

    def clear(self) -> None:
        """Forget every call recorded so far."""
        self.calls.clear()


def protected_app(
    verify: TokenVerifier, recorder: UpstreamRecorder, *, realm: str
) -> web.Application:
    """Return an unfrozen app whose requests are recorded and need a valid bearer token.

    `realm` names the service in `WWW-Authenticate`. Routes are the caller's to add;
    middlewares appended later (fault injection in tests) run after the check.
    """
    return web.Application(middlewares=[_bearer_guard(verify, recorder, realm)])


class InvalidBody(Exception):
    """A request body a demo service refuses; the message names the bad field."""


async def read_json_object(request: web.Request) -> JsonObject:
    """Return the request body as a JSON object or raise InvalidBody."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidBody("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise InvalidBody("The request body must be a JSON object.")
    return body


def require_str(container: JsonObject, key: str, where: str = "") -> str:
    """Return `container[key]` if it is a non-empty string, else raise InvalidBody."""
    value = container.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidBody(f"{where}{key} is required and must be a non-empty string.")
    return value


def require_list(container: JsonObject, key: str, where: str = "") -> list[JsonObject]:
    """Return `container[key]` if it is a non-empty list of objects."""
    value = container.get(key)
    if not isinstance(value, list) or not value:
        raise InvalidBody(f"{where}{key} is required and must be a non-empty array.")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidBody(f"{where}{key}[{index}] must be an object.")
    return value


def _bearer_guard(
    verify: TokenVerifier, recorder: UpstreamRecorder, realm: str
) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        token = _bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        authorized = token is not None and verify(token)
        recorder.record(
            RecordedCall(
                method=request.method,
                path_qs=request.raw_path,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                authorized=authorized,
            )
        )

        if not authorized:
            return _unauthorized(realm, token_present=token is not None)
        return await handler(request)

    return guard


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _unauthorized(realm: str, *, token_present: bool) -> web.Response:
    # RFC 6750 section 3.1: a request with no token gets no error code in the
    # challenge; one with a bad token gets invalid_token.
    if token_present:
        description = "The access token is invalid, expired or revoked."
        challenge = (
            f'Bearer realm="{realm}", error="invalid_token", '
            f'error_description="{description}"'
        )
    else:
        description = "The request carries no bearer token."
        challenge = f'Bearer realm="{realm}"'

    return web.json_response(
        {"error": "invalid_token", "error_description": description},
        status=401,
        headers={hdrs.WWW_AUTHENTICATE: challenge},
    )
