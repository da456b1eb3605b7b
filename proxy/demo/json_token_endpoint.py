"""A token endpoint that is not quite OAuth2, as some retail vendors run them.

IBM Sterling Store Inventory Management and services like it take the client
credentials as a JSON body, `{"client_id", "client_secret", "grant_type"}`, and
answer with the token nested and renamed:

    {"data": {"accessToken": "...", "expiresIn": 1800, "tokenType": "Bearer"}}

Errors are JSON of their own shape, never RFC 6749 section 5.2's:

    {"errors": [{"code": "AUTH_FAILED", "message": "..."}]}

with 415 UNSUPPORTED_MEDIA_TYPE, 400 INVALID_REQUEST or UNSUPPORTED_GRANT_TYPE, and
401 AUTH_FAILED (an unknown client id reads like a wrong secret). Tokens come from
the same store as the OAuth2 endpoint's, so `IdentityProvider.verify` knows them.
Unlike the OAuth2 endpoint it makes no https check of its own: the demo and the tests
serve it on loopback, and a deployment would put it behind TLS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog
from aiohttp import web

from proxy.demo.clients import RegisteredClient
from proxy.demo.upstreams import InvalidBody, read_json_object, require_str

__all__ = ["JsonTokenEndpoint", "json_error"]

_JSON_CONTENT_TYPE = "application/json"

IssueToken = Callable[[RegisteredClient], Mapping[str, object]]
"""Issues and stores a token; answers with RFC 6749 section 5.1 field names."""

log = structlog.get_logger(__name__)


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error in the vendor's shape: a list of `{"code", "message"}` objects."""
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


class JsonTokenEndpoint:
    """The JSON client_credentials endpoint of one identity provider.

    Only clients that registered a secret can use it; the provider's `auth_methods`
    are not consulted, since the body is the one way in.
    """

    def __init__(
        self, clients: Mapping[str, RegisteredClient], issue_token: IssueToken
    ) -> None:
        self._clients = clients
        self._issue_token = issue_token

    async def respond(self, request: web.Request) -> web.Response:
        """Answer one token request with a token or a vendor-shaped error."""
        if request.content_type != _JSON_CONTENT_TYPE:
            return self._refuse(
                415, "UNSUPPORTED_MEDIA_TYPE", "Send the request as application/json."
            )
        try:
            body = await read_json_object(request)
            client_id = require_str(body, "client_id")
            client_secret = require_str(body, "client_secret")
            grant_type = require_str(body, "grant_type")
        except InvalidBody as error:
            return self._refuse(400, "INVALID_REQUEST", str(error))

        if grant_type != "client_credentials":
            return self._refuse(
                400, "UNSUPPORTED_GRANT_TYPE", "grant_type must be client_credentials."
            )
        client = self._clients.get(client_id)
        if client is None or not client.check_client_secret(client_secret):
            return self._refuse(401, "AUTH_FAILED", "Invalid client credentials.")

        token = self._issue_token(client)
        data: dict[str, object] = {
            "accessToken": token["access_token"],
            "tokenType": token["token_type"],
        }
        if "expires_in" in token:
            data["expiresIn"] = token["expires_in"]
        return web.json_response({"data": data}, headers={"Cache-Control": "no-store"})

    def _refuse(self, status: int, code: str, message: str) -> web.Response:
        log.info("idp.token_refused", error=code, status=status)
        return json_error(status, code, message)
