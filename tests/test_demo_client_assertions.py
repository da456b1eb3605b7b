"""Tests for proxy.demo.client_assertions: client_secret_jwt and private_key_jwt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, RSAKey
from pki import KeyPair, make_ec_key, make_rsa_key
from pytest_aiohttp import AiohttpClient

from proxy.demo.client_assertions import CLIENT_ASSERTION_TYPE
from proxy.demo.identity_provider import ClientRegistration, IdentityProvider

Client = TestClient[web.Request, web.Application]

PATH = "/oauth2/token"
# RFC 7518 section 3.2: an HS256 key, and so a client_secret_jwt secret, is 32+ bytes.
LONG_SECRET = "a client secret of more than thirty-two bytes"
NOT_VERIFIED = "The client assertion could not be verified."


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_rsa_key(tmp_path_factory.mktemp("keys"), "oms-rsa")


@pytest.fixture(scope="module")
def ec_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_ec_key(tmp_path_factory.mktemp("keys"), "oms-ec")


@pytest.fixture
def idp(rsa_key: KeyPair, ec_key: KeyPair) -> IdentityProvider:
    return IdentityProvider(
        {
            "rsa-client": ClientRegistration(public_keys=[rsa_key.public_pem]),
            "ec-client": ClientRegistration(public_keys=[ec_key.public_pem]),
            "hs-client": LONG_SECRET,
        },
        auth_methods=("client_secret_jwt", "private_key_jwt"),
    )


@pytest.fixture
async def client(idp: IdentityProvider, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(idp.build_app(PATH))


def token_url(client: Client) -> str:
    """The audience a client assertion must name: the URL the request reaches."""
    return str(client.make_url(PATH))


def claims_for(client_id: str, aud: object) -> dict[str, object]:
    """RFC 7523 section 3 claims for `client_id`, valid for a minute."""
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    return claims


def sign(claims: dict[str, object], key: Key, alg: str, kid: str | None = None) -> str:
    """A compact JWS of `claims`, built with joserfc as a client library would."""
    header = {"alg": alg} if kid is None else {"alg": alg, "kid": kid}
    return jwt.encode(header, claims, key)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_jws(
    header: dict[str, object], claims: dict[str, object], key: bytes
) -> str:
    """A JWS built by hand, for headers no JOSE library would sign: HS256 or none."""
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    )
    if header["alg"] == "none":
        return f"{signing_input}."
    digest = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(digest)}"


async def present(
    client: Client, assertion: str, **form: str
) -> tuple[int, dict[str, str]]:
    """POST a client_credentials request with `assertion`; return status and body."""
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
        **form,
    }
    response = await client.post(PATH, data=data)
    return response.status, await response.json()


async def test_private_key_jwt_with_rs256_gets_a_token(
    idp: IdentityProvider, client: Client, rsa_key: KeyPair
) -> None:
    """An RS256 assertion signed with the registered RSA key earns a valid token."""
    key = RSAKey.import_key(rsa_key.private_pem)
    assertion = sign(claims_for("rsa-client", token_url(client)), key, "RS256")

    status, answer = await present(client, assertion)

    assert status == 200
    assert idp.verify(answer["access_token"])


async def test_private_key_jwt_with_es256_gets_a_token(
    idp: IdentityProvider, client: Client, ec_key: KeyPair
) -> None:
    """An ES256 assertion signed with the registered P-256 key earns a valid token."""
    key = ECKey.import_key(ec_key.private_pem)
    assertion = sign(claims_for("ec-client", token_url(client)), key, "ES256")

    status, answer = await present(client, assertion, client_id="ec-client")

    assert status == 200
    assert idp.verify(answer["access_token"])


async def test_client_secret_jwt_gets_a_token(
    idp: IdentityProvider, client: Client
) -> None:
    """An HS256 assertion keyed with the client secret earns a valid token."""
    key = OctKey.import_key(LONG_SECRET.encode())
    assertion = sign(claims_for("hs-client", token_url(client)), key, "HS256")

    status, answer = await present(client, assertion)

    assert status == 200
    assert idp.verify(answer["access_token"])


async def test_audience_may_be_a_list_holding_the_token_url(
    client: Client, rsa_key: KeyPair
) -> None:
    """An `aud` array that contains the token endpoint URL is accepted."""
    key = RSAKey.import_key(rsa_key.private_pem)
    aud = ["https://someone.else.example", token_url(client)]
    assertion = sign(claims_for("rsa-client", aud), key, "RS256")

    status, _ = await present(client, assertion)

    assert status == 200


async def test_assertion_signed_with_another_key_is_refused(
    idp: IdentityProvider, client: Client, tmp_path: Path
) -> None:
    """An RS256 assertion signed with a key the client never registered gets a 401."""
    stranger = RSAKey.import_key(make_rsa_key(tmp_path).private_pem)
    assertion = sign(claims_for("rsa-client", token_url(client)), stranger, "RS256")

    status, answer = await present(client, assertion)

    assert status == 401
    assert answer["error_description"] == NOT_VERIFIED
    assert idp.tokens_issued == 0


async def test_client_secret_jwt_with_a_wrong_secret_is_refused(client: Client) -> None:
    """An HS256 assertion keyed with anything but the client secret gets a 401."""
    wrong = OctKey.import_key(b"not the secret, though long enough to sign")
    assertion = sign(claims_for("hs-client", token_url(client)), wrong, "HS256")

    status, answer = await present(client, assertion)

    assert status == 401
    assert answer["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "http://127.0.0.1/somewhere/else"}, "'aud'"),
        ({"exp": int(time.time()) - 300}, "expired"),
        ({"iss": "hs-client-impostor"}, "'iss'"),
        ({"jti": None}, "'jti'"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
    ],
    ids=["wrong-aud", "expired", "iss-not-sub", "no-jti", "not-yet-valid"],
)
async def test_assertion_with_bad_claims_is_refused(
    client: Client, overrides: dict[str, object], reason: str
) -> None:
    """A well-signed assertion with a wrong aud, iss, exp, nbf or no jti gets a 401."""
    claims = {**claims_for("hs-client", token_url(client)), **overrides}
    claims = {name: value for name, value in claims.items() if value is not None}
    key = OctKey.import_key(LONG_SECRET.encode())

    status, answer = await present(client, sign(claims, key, "HS256"))

    assert status == 401
    assert answer["error"] == "invalid_client"
    assert reason in answer["error_description"]


async def test_replayed_jti_is_refused(idp: IdentityProvider, client: Client) -> None:
    """An assertion accepted once is refused the second time (RFC 7523 section 3)."""
    key = OctKey.import_key(LONG_SECRET.encode())
    assertion = sign(claims_for("hs-client", token_url(client)), key, "HS256")

    first, _ = await present(client, assertion)
    second, answer = await present(client, assertion)

    assert first == 200
    assert second == 401
    assert "jti" in answer["error_description"]
    assert idp.tokens_issued == 1


async def test_unsigned_assertion_is_refused(client: Client) -> None:
    """An assertion with `alg: none` gets a 401, however valid its claims."""
    claims = claims_for("rsa-client", token_url(client))

    status, answer = await present(client, handmade_jws({"alg": "none"}, claims, b""))

    assert status == 401
    assert "'none' is not accepted" in answer["error_description"]


async def test_hs256_keyed_with_a_public_key_is_refused(
    client: Client, rsa_key: KeyPair
) -> None:
    """HS256 for a private_key_jwt client, keyed with its public PEM, gets a 401."""
    claims = claims_for("rsa-client", token_url(client))
    header = {"alg": "HS256"}

    forged = handmade_jws(header, claims, rsa_key.public_pem.encode())
    status, answer = await present(client, forged)

    assert status == 401
    assert answer["error_description"] == NOT_VERIFIED


async def test_private_key_jwt_only_provider_refuses_hs256_assertions(
    aiohttp_client: AiohttpClient, rsa_key: KeyPair
) -> None:
    """A provider without client_secret_jwt refuses an HS256 assertion with a 401."""
    idp = IdentityProvider(
        {"rsa-client": ClientRegistration(public_keys=[rsa_key.public_pem])},
        auth_methods=("private_key_jwt",),
    )
    client = await aiohttp_client(idp.build_app(PATH))
    key = OctKey.import_key(LONG_SECRET.encode())

    status, answer = await present(
        client, sign(claims_for("rsa-client", token_url(client)), key, "HS256")
    )

    assert status == 401
    assert answer["error"] == "invalid_client"


async def test_kid_selects_among_several_registered_keys(
    aiohttp_client: AiohttpClient, rsa_key: KeyPair, ec_key: KeyPair
) -> None:
    """With two keys registered, the assertion's kid picks one; no kid is refused."""
    registration = ClientRegistration(
        public_keys=[
            RSAKey.import_key(rsa_key.public_pem, {"kid": "rsa-2026"}),
            ECKey.import_key(ec_key.public_pem, {"kid": "ec-2026"}),
        ]
    )
    idp = IdentityProvider({"oms": registration}, auth_methods=("private_key_jwt",))
    client = await aiohttp_client(idp.build_app(PATH))
    key = ECKey.import_key(ec_key.private_pem)

    with_kid, _ = await present(
        client, sign(claims_for("oms", token_url(client)), key, "ES256", "ec-2026")
    )
    wrong_kid, _ = await present(
        client, sign(claims_for("oms", token_url(client)), key, "ES256", "rsa-2026")
    )
    without_kid, _ = await present(
        client, sign(claims_for("oms", token_url(client)), key, "ES256")
    )

    assert with_kid == 200
    assert wrong_kid == 401
    assert without_kid == 401


async def test_unknown_client_reads_like_a_bad_signature(
    client: Client, tmp_path: Path
) -> None:
    """An assertion for an unknown client gets the same answer as a forged one."""
    stranger = RSAKey.import_key(make_rsa_key(tmp_path).private_pem)

    unknown = await present(
        client, sign(claims_for("nobody", token_url(client)), stranger, "RS256")
    )
    forged = await present(
        client, sign(claims_for("rsa-client", token_url(client)), stranger, "RS256")
    )

    assert unknown == forged
    assert unknown[0] == 401


async def test_client_id_that_differs_from_sub_is_refused(
    client: Client,
) -> None:
    """A form client_id naming another client than the assertion's sub gets a 401."""
    key = OctKey.import_key(LONG_SECRET.encode())
    assertion = sign(claims_for("hs-client", token_url(client)), key, "HS256")

    status, _ = await present(client, assertion, client_id="rsa-client")

    assert status == 401


@pytest.mark.parametrize(
    "assertion", ["not-a-jwt", "a.b.c", "..", "e30.e30.", "W10.W10.c2ln", "\u00e9.x.y"]
)
async def test_malformed_assertion_is_refused_not_crashed(
    client: Client, assertion: str
) -> None:
    """Garbage in client_assertion gets a 401 invalid_client, never a 500."""
    status, answer = await present(client, assertion)

    assert status == 401
    assert answer["error"] == "invalid_client"


async def test_wrong_assertion_type_is_refused(client: Client) -> None:
    """A client_assertion_type other than jwt-bearer gets a 401."""
    key = OctKey.import_key(LONG_SECRET.encode())
    assertion = sign(claims_for("hs-client", token_url(client)), key, "HS256")

    status, _ = await present(client, assertion, client_assertion_type="saml2-bearer")

    assert status == 401


async def test_assertion_with_basic_credentials_is_refused(client: Client) -> None:
    """An assertion plus an Authorization header is two methods: invalid_request."""
    key = OctKey.import_key(LONG_SECRET.encode())
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": sign(
            claims_for("hs-client", token_url(client)), key, "HS256"
        ),
    }

    response = await client.post(
        PATH, data=data, headers={"Authorization": "Basic aHMtY2xpZW50OnNlY3JldA=="}
    )

    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"


def test_short_client_secret_jwt_secret_is_refused_at_registration() -> None:
    """A client_secret_jwt secret under 32 bytes is a ValueError naming the client."""
    with pytest.raises(ValueError, match=r"'oms'.*32 bytes"):
        IdentityProvider({"oms": "short"}, auth_methods=("client_secret_jwt",))


def test_private_key_jwt_client_without_keys_is_refused_at_registration() -> None:
    """Asking for private_key_jwt without registering a key is a ValueError."""
    registration = ClientRegistration(
        client_secret=LONG_SECRET, auth_methods=("private_key_jwt",)
    )

    with pytest.raises(ValueError, match="lacks the credentials"):
        IdentityProvider({"oms": registration}, auth_methods=("private_key_jwt",))


def test_p384_key_is_refused_at_registration() -> None:
    """private_key_jwt takes EC keys on P-256 only, the curve of ES256."""
    p384 = ECKey.generate_key("P-384")

    with pytest.raises(ValueError, match="P-256"):
        IdentityProvider(
            {"oms": ClientRegistration(public_keys=[p384])},
            auth_methods=("private_key_jwt",),
        )
