"""Tests for proxy.demo.identity_provider: the demo OAuth2 authorization server."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestClient
from joserfc import jwt
from pytest_aiohttp import AiohttpClient

from proxy.demo.identity_provider import (
    ClientRegistration,
    IdentityProvider,
    JwtAlgorithm,
    announced_expires_in,
)

SECRET = "s3cr+t/with:colon%41"
GRANT = {"grant_type": "client_credentials"}

Client = TestClient[web.Request, web.Application]
CREDENTIALS = {**GRANT, "client_id": "oms", "client_secret": SECRET}


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rfc_basic(client_id: str, secret: str) -> str:
    """Basic credentials as RFC 6749 section 2.3.1 asks: form-encoded, then base64."""
    return encode_basic_auth(quote_plus(client_id), quote_plus(secret))


async def issue_token(client: Client) -> str:
    """Ask for a token with client_secret_post and return it."""
    response = await client.post("/oauth2/token", data=CREDENTIALS)
    assert response.status == 200
    token: str = (await response.json())["access_token"]
    return token


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(clock: FakeClock) -> IdentityProvider:
    return IdentityProvider(
        {"oms": SECRET, "spaced": "open sesame"}, token_lifetime_s=30, clock=clock
    )


@pytest.fixture
async def client(idp: IdentityProvider, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(idp.build_app())


async def test_basic_client_gets_a_bearer_token(
    idp: IdentityProvider, client: Client
) -> None:
    """A client using client_secret_basic gets a Bearer token that verifies."""
    headers = {"Authorization": rfc_basic("oms", SECRET)}

    response = await client.post("/oauth2/token", data=GRANT, headers=headers)
    answer = await response.json()

    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 30
    assert "scope" not in answer
    assert idp.verify(answer["access_token"])


async def test_post_client_gets_a_bearer_token(
    idp: IdentityProvider, client: Client
) -> None:
    """A client using client_secret_post gets a Bearer token that verifies."""
    response = await client.post("/oauth2/token", data=CREDENTIALS)
    answer = await response.json()

    assert response.status == 200
    assert idp.verify(answer["access_token"])


async def test_secret_with_space_authenticates_when_sent_as_plus(
    client: Client,
) -> None:
    """A space in a Basic secret travels as `+` (form encoding) and is decoded back."""
    headers = {"Authorization": rfc_basic("spaced", "open sesame")}

    response = await client.post("/oauth2/token", data=GRANT, headers=headers)

    assert response.status == 200


async def test_special_secret_sent_without_form_encoding_is_refused(
    idp: IdentityProvider, client: Client
) -> None:
    """Basic credentials that skip the RFC's form encoding do not authenticate."""
    headers = {"Authorization": encode_basic_auth("oms", SECRET)}

    response = await client.post("/oauth2/token", data=GRANT, headers=headers)

    assert response.status == 401
    assert idp.tokens_issued == 0


async def test_wrong_secret_gets_invalid_client_and_no_token(
    idp: IdentityProvider, client: Client
) -> None:
    """A wrong Basic secret gets a 401 invalid_client with a Basic challenge."""
    headers = {"Authorization": rfc_basic("oms", "not-the-secret")}

    response = await client.post("/oauth2/token", data=GRANT, headers=headers)
    answer = await response.json()

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert answer["error"] == "invalid_client"
    assert "access_token" not in answer
    assert idp.tokens_issued == 0


async def test_unknown_client_is_answered_like_a_wrong_secret(client: Client) -> None:
    """An unknown client id gets the same answer as a wrong secret."""
    unknown = {**GRANT, "client_id": "nobody", "client_secret": SECRET}
    wrong = {**GRANT, "client_id": "oms", "client_secret": "not-the-secret"}

    unknown_response = await client.post("/oauth2/token", data=unknown)
    wrong_response = await client.post("/oauth2/token", data=wrong)

    assert unknown_response.status == wrong_response.status == 401
    assert await unknown_response.json() == await wrong_response.json()


async def test_post_only_provider_refuses_basic_credentials(
    aiohttp_client: AiohttpClient,
) -> None:
    """A provider limited to client_secret_post refuses Basic with a 401 challenge."""
    idp = IdentityProvider({"oms": SECRET}, auth_methods=("client_secret_post",))
    client = await aiohttp_client(idp.build_app())
    headers = {"Authorization": rfc_basic("oms", SECRET)}

    response = await client.post("/oauth2/token", data=GRANT, headers=headers)

    # RFC 6749 section 5.2: a client that tried the Authorization header gets a 401.
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert (await response.json())["error"] == "invalid_client"


async def test_malformed_basic_header_is_refused_not_crashed(client: Client) -> None:
    """Basic credentials that are not base64 or not UTF-8 get a 401, not a 500."""
    latin1 = base64.b64encode("oms:s\xe9cret".encode("latin-1")).decode()

    not_base64 = await client.post(
        "/oauth2/token", data=GRANT, headers={"Authorization": "Basic %%%"}
    )
    not_utf8 = await client.post(
        "/oauth2/token", data=GRANT, headers={"Authorization": f"Basic {latin1}"}
    )

    assert not_base64.status == 401
    assert not_utf8.status == 401


async def test_counters_count_every_request_and_each_issued_token(
    idp: IdentityProvider, client: Client
) -> None:
    """token_requests counts every POST; tokens_issued only the successful ones."""
    good = {"Authorization": rfc_basic("oms", SECRET)}
    bad = {"Authorization": rfc_basic("oms", "wrong")}

    for headers in (good, bad, good):
        await client.post("/oauth2/token", data=GRANT, headers=headers)

    assert idp.token_requests == 3
    assert idp.tokens_issued == 2


async def test_token_stops_verifying_once_its_lifetime_has_passed(
    idp: IdentityProvider, client: Client, clock: FakeClock
) -> None:
    """A token verifies until its lifetime has passed on the monotonic clock."""
    idp.token_lifetime_s = 1.5
    token = await issue_token(client)

    clock.now += 1.4
    still_valid = idp.verify(token)
    clock.now += 0.1

    assert still_valid
    assert not idp.verify(token)


async def test_fractional_lifetime_is_announced_rounded_up(
    idp: IdentityProvider, client: Client
) -> None:
    """A lifetime of 1.5 s is announced as expires_in 2."""
    idp.token_lifetime_s = 1.5

    response = await client.post("/oauth2/token", data=CREDENTIALS)

    assert (await response.json())["expires_in"] == 2


def test_announced_expires_in_is_at_least_one_second() -> None:
    """Sub-second lifetimes still announce expires_in 1."""
    assert announced_expires_in(0.2) == 1
    assert announced_expires_in(30.0) == 30


async def test_expires_in_is_omitted_when_switched_off(
    idp: IdentityProvider, client: Client
) -> None:
    """With include_expires_in off the answer carries no expires_in."""
    idp.include_expires_in = False

    response = await client.post("/oauth2/token", data=CREDENTIALS)

    assert "expires_in" not in await response.json()


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_jwt_token_carries_standard_claims(
    algorithm: JwtAlgorithm, aiohttp_client: AiohttpClient
) -> None:
    """A JWT token is signed by the provider and carries sub, iat, exp and jti."""
    idp = IdentityProvider(
        {"oms": SECRET},
        token_lifetime_s=60,
        include_expires_in=False,
        token_format="jwt",
        jwt_algorithm=algorithm,
    )
    client = await aiohttp_client(idp.build_app())

    token = await issue_token(client)
    decoded = jwt.decode(token, idp.signing_key, algorithms=[algorithm])

    assert decoded.header["alg"] == algorithm
    assert decoded.claims["sub"] == "oms"
    assert decoded.claims["exp"] - decoded.claims["iat"] in (60, 61)
    assert decoded.claims["jti"]
    assert idp.verify(token)


async def test_revoking_one_token_leaves_the_others_valid(
    idp: IdentityProvider, client: Client
) -> None:
    """revoke(token) invalidates that token only; revoke() invalidates all."""
    first = await issue_token(client)
    second = await issue_token(client)

    idp.revoke(first)
    second_survives = idp.verify(second)
    idp.revoke()

    assert not idp.verify(first)
    assert second_survives
    assert not idp.verify(second)
    assert idp.last_token == second


def test_nonpositive_lifetime_is_rejected(idp: IdentityProvider) -> None:
    """A lifetime that is not a positive number of seconds is refused with its value."""
    with pytest.raises(ValueError, match="-1"):
        idp.token_lifetime_s = -1


async def test_json_body_is_refused_as_invalid_request(client: Client) -> None:
    """A token request that is not form-encoded gets invalid_request."""
    response = await client.post("/oauth2/token", json=CREDENTIALS)

    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_repeated_parameter_is_refused(client: Client) -> None:
    """A parameter sent twice gets invalid_request (RFC 6749 section 3.2)."""
    form = [
        ("grant_type", "client_credentials"),
        ("client_id", "oms"),
        ("client_secret", SECRET),
        ("client_secret", SECRET),
    ]

    response = await client.post("/oauth2/token", data=form)

    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_two_authentication_methods_at_once_are_refused(client: Client) -> None:
    """Basic credentials plus a client_secret in the body get invalid_request."""
    headers = {"Authorization": rfc_basic("oms", SECRET)}

    response = await client.post("/oauth2/token", data=CREDENTIALS, headers=headers)

    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


async def test_other_grant_types_are_unsupported(client: Client) -> None:
    """Only client_credentials is served."""
    form = {"grant_type": "password", "client_id": "oms", "client_secret": SECRET}

    response = await client.post("/oauth2/token", data=form)

    assert response.status == 400
    assert (await response.json())["error"] == "unsupported_grant_type"


async def test_scopes_are_granted_from_the_supported_set_only(
    aiohttp_client: AiohttpClient,
) -> None:
    """A supported scope is granted and echoed; an unknown one gets invalid_scope."""
    idp = IdentityProvider({"oms": SECRET}, scopes=["inventory:read", "prices:read"])
    client = await aiohttp_client(idp.build_app())

    granted = await client.post(
        "/oauth2/token", data={**CREDENTIALS, "scope": "prices:read"}
    )
    refused = await client.post("/oauth2/token", data={**CREDENTIALS, "scope": "admin"})

    assert (await granted.json())["scope"] == "prices:read"
    assert refused.status == 400
    assert (await refused.json())["error"] == "invalid_scope"


async def test_only_post_is_routed(idp: IdentityProvider, client: Client) -> None:
    """A GET on the token endpoint gets 405 and is not counted as a token request."""
    response = await client.get("/oauth2/token")

    assert response.status == 405
    assert idp.token_requests == 0


async def test_plain_http_to_a_non_loopback_host_is_refused(client: Client) -> None:
    """Over http, only loopback hosts pass authlib's transport check."""
    response = await client.post(
        "/oauth2/token", data=CREDENTIALS, headers={"Host": "idp.example.com"}
    )

    assert response.status == 400
    assert (await response.json())["error"] == "insecure_transport"


async def test_requests_beyond_the_hourly_cap_get_429_with_retry_after(
    clock: FakeClock, aiohttp_client: AiohttpClient
) -> None:
    """The third request within an hour of a cap of two waits for the oldest to age."""
    idp = IdentityProvider({"oms": SECRET}, max_token_requests_per_hour=2, clock=clock)
    client = await aiohttp_client(idp.build_app())
    await client.post("/oauth2/token", data=CREDENTIALS)
    clock.now += 600
    await client.post("/oauth2/token", data={**CREDENTIALS, "client_secret": "wrong"})

    refused = await client.post("/oauth2/token", data=CREDENTIALS)

    assert refused.status == 429
    assert refused.headers["Retry-After"] == "3000"
    assert (await refused.json())["error"] == "rate_limited"
    assert idp.token_requests == 3
    assert idp.tokens_issued == 1


async def test_rate_limit_window_slides_and_refusals_take_no_slot(
    clock: FakeClock, aiohttp_client: AiohttpClient
) -> None:
    """Once the oldest request is an hour old one slot frees; the next waits again."""
    idp = IdentityProvider({"oms": SECRET}, max_token_requests_per_hour=2, clock=clock)
    client = await aiohttp_client(idp.build_app())
    await client.post("/oauth2/token", data=CREDENTIALS)
    clock.now += 600
    await client.post("/oauth2/token", data=CREDENTIALS)
    await client.post("/oauth2/token", data=CREDENTIALS)
    clock.now += 3000

    admitted = await client.post("/oauth2/token", data=CREDENTIALS)
    refused = await client.post("/oauth2/token", data=CREDENTIALS)

    assert admitted.status == 200
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "600"


async def test_registration_may_narrow_a_clients_methods(
    aiohttp_client: AiohttpClient,
) -> None:
    """A client registered for client_secret_post alone cannot use Basic."""
    registration = ClientRegistration(
        client_secret=SECRET, auth_methods=("client_secret_post",)
    )
    idp = IdentityProvider({"oms": registration, "other": "other-secret"})
    client = await aiohttp_client(idp.build_app())
    headers = {"Authorization": rfc_basic("oms", SECRET)}

    basic = await client.post("/oauth2/token", data=GRANT, headers=headers)
    post = await client.post("/oauth2/token", data=CREDENTIALS)

    assert basic.status == 401
    assert post.status == 200


def test_unknown_auth_method_is_rejected() -> None:
    """An auth method the provider does not implement is a ValueError naming it."""
    with pytest.raises(ValueError, match="client_secret_telepathy"):
        IdentityProvider({"oms": SECRET}, auth_methods=("client_secret_telepathy",))  # type: ignore[arg-type]


def test_registration_for_a_method_the_provider_lacks_is_rejected() -> None:
    """A client may not ask for a method its provider does not serve."""
    registration = ClientRegistration(
        client_secret=SECRET, auth_methods=("client_secret_basic",)
    )

    with pytest.raises(ValueError, match="'oms'"):
        IdentityProvider({"oms": registration}, auth_methods=("client_secret_post",))


def test_empty_secret_is_rejected() -> None:
    """A client registered with an empty secret has no way to authenticate."""
    with pytest.raises(ValueError, match="'oms'"):
        IdentityProvider({"oms": ""})
