"""authlib's framework-agnostic OAuth2 server, adapted to aiohttp for the demo.

`TokenServer` reads an aiohttp request, hands authlib an `OAuth2Request` whose payload
is the already-read form (authlib's non-deprecated path: no `body=`), and turns
authlib's `(status, body, headers)` answers into aiohttp responses. Client
authentication methods beyond authlib's own are registered from `client_assertions`
(client_secret_jwt, private_key_jwt) and `mtls` (tls_client_auth), which reads the
verified client certificate this adapter attaches to each request.

It also departs from authlib where authlib departs from the RFCs or from our rules:
client_secret_basic decodes credentials as application/x-www-form-urlencoded (RFC 6749
section 2.3.1), client_secret_post does not reveal which client ids exist, repeated
parameters and double client authentication are refused, invalid_client is always a
401, and no token is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from urllib.parse import unquote_plus

import structlog
from aiohttp import hdrs, web

# authlib ships no type information; "unused-ignore" keeps this line clean should the
# project's mypy configuration ever ignore authlib's missing stubs instead.
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped, unused-ignore]
    AuthorizationServer,
    ClientCredentialsGrant,
    InsecureTransportError,
    InvalidClientError,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from multidict import CIMultiDict, MultiDict, MultiDictProxy

from proxy.demo.client_assertions import ClientAssertionVerifier
from proxy.demo.clients import RegisteredClient
from proxy.demo.mtls import authenticate_tls_client, peer_certificate

__all__ = ["RegisteredClient", "TokenServer"]

_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

TokenGenerator = Callable[..., dict[str, object]]
"""authlib's token generator: keyword arguments grant_type, client, scope, ..."""

log = structlog.get_logger(__name__)


class _FormPayload(OAuth2Payload):  # type: ignore[misc]  # authlib's classes are untyped
    def __init__(self, form: MultiDictProxy[str]) -> None:
        self._form = form

    @property
    def data(self) -> MultiDictProxy[str]:
        return self._form

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._form.items():
            values[key].append(value)
        return values


class _AiohttpOAuth2Request(OAuth2Request):  # type: ignore[misc]  # untyped authlib
    """An authlib request built from an aiohttp request whose form is already read."""

    def __init__(self, request: web.Request, form: MultiDictProxy[str]) -> None:
        super().__init__(
            method=request.method, uri=str(request.url), headers=request.headers
        )
        self._query = request.query
        self.payload = _FormPayload(form)
        self.client_certificate = peer_certificate(request)

    @property
    def args(self) -> object:
        return self._query

    @property
    def form(self) -> MultiDictProxy[str]:
        form: MultiDictProxy[str] = self.payload.data
        return form


class _StrictClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """authlib's grant, stricter about the request and silent about the token."""

    def __init__(self, request: _AiohttpOAuth2Request, server: TokenServer) -> None:
        super().__init__(request, server)
        self.TOKEN_ENDPOINT_AUTH_METHODS = server.auth_methods

    def validate_token_request(self) -> None:
        # RFC 6749 section 3.2: parameters MUST NOT be included more than once.
        for name, values in self.request.payload.datalist.items():
            if len(values) > 1:
                raise InvalidRequestError(f"The parameter {name!r} is repeated.")

        # RFC 6749 section 2.3: a client MUST NOT use more than one auth method. A
        # client certificate does not count: RFC 8705 section 3 lets a client send
        # one to bind its tokens while it authenticates otherwise.
        form = self.request.payload.data
        credentials = (
            hdrs.AUTHORIZATION in self.request.headers,
            "client_secret" in form,
            "client_assertion" in form or "client_assertion_type" in form,
        )
        if sum(credentials) > 1:
            raise InvalidRequestError(
                "The client used more than one authentication method."
            )

        super().validate_token_request()

    def create_token_response(
        self,
    ) -> tuple[int, dict[str, object], list[tuple[str, str]]]:
        # Replaces authlib's version only to drop its DEBUG line that logs the token.
        token = self.generate_token(
            scope=self.request.payload.scope, include_refresh_token=False
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class TokenServer(AuthorizationServer):  # type: ignore[misc]  # authlib is untyped
    """The client_credentials token endpoint of one identity provider.

    Token creation and storage stay with the caller: `generate_token` builds the
    answer, `save_token` receives it with the client id once the client is
    authenticated.
    """

    def __init__(
        self,
        clients: Mapping[str, RegisteredClient],
        auth_methods: Collection[str],
        scopes: Collection[str] | None,
        generate_token: TokenGenerator,
        save_token: Callable[[Mapping[str, object], str], None],
    ) -> None:
        super().__init__(scopes_supported=list(scopes) if scopes is not None else None)
        self.auth_methods = sorted(auth_methods)
        self._clients = clients
        self._save = save_token
        self.register_token_generator("default", generate_token)
        self.register_client_auth_method("client_secret_basic", _authenticate_basic)
        self.register_client_auth_method("client_secret_post", _authenticate_post)
        assertions = ClientAssertionVerifier(auth_methods)
        for method in ("client_secret_jwt", "private_key_jwt"):
            self.register_client_auth_method(method, assertions.for_method(method))
        self.register_client_auth_method("tls_client_auth", authenticate_tls_client)
        self.register_grant(_StrictClientCredentialsGrant)

    async def respond(self, request: web.Request) -> web.Response:
        """Answer one token request with a token or an RFC 6749 section 5.2 error."""
        # RFC 6749 section 4.4.2: the request body is form-encoded, nothing else.
        if request.content_type != _FORM_CONTENT_TYPE:
            error = InvalidRequestError(
                f"The token request must be sent as {_FORM_CONTENT_TYPE}."
            )
            return self.handle_error_response(None, error)

        form = await request.post()
        fields = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
        try:
            oauth2_request = _AiohttpOAuth2Request(request, MultiDictProxy(fields))
        except InsecureTransportError as error:
            return self.handle_error_response(None, error)

        response: web.Response = self.create_token_response(oauth2_request)
        return response

    def query_client(self, client_id: str) -> RegisteredClient | None:
        return self._clients.get(client_id)

    def authenticate_client(
        self, request: OAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> RegisteredClient:
        """authlib's method loop, with every invalid_client a 401.

        authlib answers 400 unless client_secret_basic is allowed. RFC 6749 section
        5.2 permits 401 always and requires it when the client used the
        Authorization header, which authlib's 400 misses on a provider without Basic.
        """
        try:
            client: RegisteredClient = super().authenticate_client(
                request, methods, endpoint
            )
        except InvalidClientError as error:
            error.status_code = 401
            raise
        return client

    def save_token(self, token: Mapping[str, object], request: OAuth2Request) -> None:
        self._save(token, request.client.client_id)

    def create_oauth2_request(self, request: _AiohttpOAuth2Request) -> OAuth2Request:
        return request

    def handle_response(
        self, status: int, body: object, headers: list[tuple[str, str]]
    ) -> web.Response:
        return web.Response(
            status=status, body=json.dumps(body).encode(), headers=CIMultiDict(headers)
        )

    def handle_error_response(
        self, request: OAuth2Request | None, error: OAuth2Error
    ) -> web.Response:
        log.info("idp.token_refused", error=error.error, status=error.status_code)
        response: web.Response = super().handle_error_response(request, error)
        return response

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        """authlib's hook for framework signals; the demo has no subscribers."""


def _authenticate_basic(
    query_client: Callable[[str], RegisteredClient | None], request: OAuth2Request
) -> RegisteredClient | None:
    """client_secret_basic that decodes credentials as RFC 6749 section 2.3.1 says.

    Both parts are application/x-www-form-urlencoded before base64 (RFC 6749 appendix
    B), so `+` means a space. authlib's own method uses `unquote`, which keeps `+`
    and so refuses an RFC-encoded secret that contains a space; it also fails with a
    500 on credentials that are not UTF-8.
    """
    credentials = _basic_credentials(request.headers.get(hdrs.AUTHORIZATION))
    if credentials is None:
        return None
    return _check_credentials(query_client, *credentials)


def _authenticate_post(
    query_client: Callable[[str], RegisteredClient | None], request: OAuth2Request
) -> RegisteredClient | None:
    """client_secret_post that answers an unknown client id like a wrong secret.

    authlib's own method refuses an unknown client id early with a distinct answer,
    which tells a caller which client ids exist.
    """
    form = request.payload.data
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not client_secret:
        return None
    return _check_credentials(query_client, client_id, client_secret)


def _check_credentials(
    query_client: Callable[[str], RegisteredClient | None],
    client_id: str,
    client_secret: str,
) -> RegisteredClient | None:
    client = query_client(client_id)
    if client is None or not client.check_client_secret(client_secret):
        return None
    return client


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None

    client_id, colon, client_secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)
