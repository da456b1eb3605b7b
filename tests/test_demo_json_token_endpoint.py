"""Tests for proxy.demo.json_token_endpoint: the vendor JSON token endpoint."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from proxy.demo.identity_provider import ClientRegistration, IdentityProvider

Client = TestClient[web.Request, web.Application]

PATH = "/demo-tenant/oauth2/token"
SECRET = "s3cr+t/with:colon%41"
CREDENTIALS = {
    "client_id": "oms",
    "client_secret": SECRET,
    "grant_type": "client_credentials",
}


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider(
        {"oms": SECRET}, token_lifetime_s=1800, request_format="json"
    )


@pytest.fixture
async def client(idp: IdentityProvider, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(idp.build_app(PATH))


async def test_json_credentials_get_a_nested_camel_case_token(
    idp: IdentityProvider, client: Client
) -> None:
    """A JSON body with valid credentials gets the token under data.accessToken."""
    response = await client.post(PATH, json=CREDENTIALS)
    answer = await response.json()

    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert set(answer) == {"data"}
    assert answer["data"]["tokenType"] == "Bearer"
    assert answer["data"]["expiresIn"] == 1800
    assert idp.verify(answer["data"]["accessToken"])
    assert idp.tokens_issued == 1


async def test_expires_in_is_left_out_when_switched_off(
    idp: IdentityProvider, client: Client
) -> None:
    """With include_expires_in off the answer carries no expiresIn."""
    idp.include_expires_in = False

    response = await client.post(PATH, json=CREDENTIALS)

    assert "expiresIn" not in (await response.json())["data"]


@pytest.mark.parametrize(
    "credentials",
    [
        {**CREDENTIALS, "client_secret": "not-the-secret"},
        {**CREDENTIALS, "client_id": "nobody"},
    ],
    ids=["wrong-secret", "unknown-client"],
)
async def test_bad_credentials_get_auth_failed(
    idp: IdentityProvider, client: Client, credentials: dict[str, str]
) -> None:
    """A wrong secret or unknown client gets 401 AUTH_FAILED in the vendor's shape."""
    response = await client.post(PATH, json=credentials)

    assert response.status == 401
    assert await response.json() == {
        "errors": [{"code": "AUTH_FAILED", "message": "Invalid client credentials."}]
    }
    assert idp.tokens_issued == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"client_id": "oms", "grant_type": "client_credentials"},
            400,
            "INVALID_REQUEST",
        ),
        ([CREDENTIALS], 400, "INVALID_REQUEST"),
        ({**CREDENTIALS, "grant_type": "password"}, 400, "UNSUPPORTED_GRANT_TYPE"),
    ],
    ids=["missing-secret", "not-an-object", "other-grant"],
)
async def test_malformed_requests_get_vendor_errors(
    client: Client, body: object, status: int, code: str
) -> None:
    """Missing fields, a non-object body or another grant get 400s with a code."""
    response = await client.post(PATH, json=body)
    answer = await response.json()

    assert response.status == status
    assert answer["errors"][0]["code"] == code
    assert "error" not in answer


async def test_form_body_is_refused_as_unsupported_media_type(client: Client) -> None:
    """The OAuth2 form encoding is what this endpoint does not take: 415."""
    response = await client.post(PATH, data=CREDENTIALS)

    assert response.status == 415
    assert (await response.json())["errors"][0]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_body_that_is_not_json_is_refused(client: Client) -> None:
    """A body that does not parse gets 400 INVALID_REQUEST, not a 500."""
    response = await client.post(
        PATH, data=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == "INVALID_REQUEST"


async def test_rate_limited_json_endpoint_answers_in_its_own_shape(
    aiohttp_client: AiohttpClient,
) -> None:
    """Beyond the hourly cap the JSON endpoint answers 429 RATE_LIMITED."""
    idp = IdentityProvider(
        {"oms": SECRET}, request_format="json", max_token_requests_per_hour=1
    )
    client = await aiohttp_client(idp.build_app(PATH))

    await client.post(PATH, json=CREDENTIALS)
    response = await client.post(PATH, json=CREDENTIALS)

    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0
    assert (await response.json())["errors"][0]["code"] == "RATE_LIMITED"


def test_json_endpoint_needs_a_secret_for_every_client() -> None:
    """A client without a secret cannot use the JSON endpoint, so it is refused."""
    by_certificate = ClientRegistration(tls_client_auth_subject_dn="CN=oms")

    with pytest.raises(ValueError, match="no secret"):
        IdentityProvider(
            {"oms": SECRET, "cert-only": by_certificate},
            auth_methods=("client_secret_post", "tls_client_auth"),
            request_format="json",
        )
