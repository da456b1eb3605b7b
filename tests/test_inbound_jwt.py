"""Partner JWT verification against a real JWKS server on 127.0.0.1, on fake clocks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from proxy.access_config import InboundJwtConfig
from proxy.inbound_jwt import InvalidJwt, JwksUnavailable, JwtVerifier, VerifiedJwt
from tests.conftest import AiohttpServer, LogCapture

ISSUER = "https://idp.partner.example"
AUDIENCE = "inventory-proxy"
START = 1_800_000_000.0

RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
UNPUBLISHED_KEY = RSAKey.generate_key(2048)
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """Serves ``/jwks.json`` from ``keys``, counting requests; ``status`` breaks it."""

    def __init__(self) -> None:
        self.keys: list[Key] = [RSA_KEY, EC_KEY]
        self.requests = 0
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="<html>down</html>")
        return web.json_response({"keys": [key.as_dict() for key in self.keys]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        app.router.add_get("/moved", self.redirect)
        return app

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/jwks.json")


@dataclass
class Harness:
    jwks: JwksServer
    verifier: JwtVerifier
    clock: FakeClock
    wall: FakeClock


VerifierFactory = Callable[..., Harness]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def jwks_server(aiohttp_server: AiohttpServer) -> tuple[JwksServer, TestServer]:
    jwks = JwksServer()
    return jwks, await aiohttp_server(jwks.app())


@pytest.fixture
def make_verifier(
    jwks_server: tuple[JwksServer, TestServer], session: aiohttp.ClientSession
) -> VerifierFactory:
    """A verifier on fake clocks against the test JWKS; keywords override config."""
    jwks, server = jwks_server

    def build(path: str = "/jwks.json", **overrides: Any) -> Harness:
        config = InboundJwtConfig.model_validate(
            {
                "jwks_url": str(server.make_url(path)),
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "scope_grants": {
                    "stock.read": ["inventory:GET"],
                    "stock.write": ["inventory:POST", "inventory:GET"],
                },
                **overrides,
            }
        )
        clock, wall = FakeClock(100.0), FakeClock(START)
        verifier = JwtVerifier(config, session, clock=clock, wall_clock=wall)
        return Harness(jwks, verifier, clock, wall)

    return build


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-7",
        "client_id": "acme",
        "scope": "stock.read stock.write other",
        "iat": START - 10,
        "exp": START + 300,
    }
    merged = {**base, **overrides}
    return {key: value for key, value in merged.items() if value is not None}


def sign(
    key: RSAKey | ECKey, alg: str = "RS256", kid: str | None = None, **overrides: Any
) -> str:
    header = {"alg": alg, "kid": kid or key.kid}
    return jwt.encode(header, claims(**overrides), key)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_built(header: dict[str, Any], key: bytes | None) -> str:
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    )
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def refusal(harness: Harness, token: str) -> InvalidJwt:
    with pytest.raises(InvalidJwt) as caught:
        await harness.verifier.verify(token)
    assert token not in caught.value.reason
    assert token not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(("key", "alg"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256")])
async def test_valid_token_names_caller_scopes_and_grants(
    make_verifier: VerifierFactory, key: RSAKey | ECKey, alg: str
) -> None:
    """A well-formed token verifies into its caller, scopes and granted routes."""
    harness = make_verifier()

    verified = await harness.verifier.verify(sign(key, alg))

    assert verified == VerifiedJwt(
        caller="acme",
        scopes=frozenset({"stock.read", "stock.write", "other"}),
        grants=frozenset({"inventory:GET", "inventory:POST"}),
        expires_at=START + 300,
    )
    assert harness.jwks.requests == 1


@pytest.mark.parametrize(
    ("overrides", "caller", "scopes"),
    [
        ({"client_id": None, "azp": "beta"}, "beta", {"stock.read", "stock.write"}),
        ({"client_id": None, "scope": ["stock.read"]}, "user-7", {"stock.read"}),
        ({"scope": None, "scp": ["stock.write"]}, "acme", {"stock.write"}),
        ({"scope": None}, "acme", set()),
    ],
)
async def test_caller_falls_back_and_scopes_take_every_shape(
    make_verifier: VerifierFactory,
    overrides: dict[str, Any],
    caller: str,
    scopes: set[str],
) -> None:
    """Without client_id the caller is azp or sub; scopes may be a list or scp."""
    harness = make_verifier()
    token = sign(RSA_KEY, **{"scope": "stock.read stock.write", **overrides})

    verified = await harness.verifier.verify(token)

    assert (verified.caller, verified.scopes) == (caller, frozenset(scopes))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sign(RSA_KEY, exp=START - 31), "token expired"),
        (sign(RSA_KEY, nbf=START + 31), "token not yet valid"),
        (sign(RSA_KEY, iat=START + 31), "token not yet valid"),
        (sign(RSA_KEY, exp=None), "token has no expiry"),
        (sign(RSA_KEY, exp=float("nan")), "malformed exp claim"),
        (sign(RSA_KEY, nbf="yesterday"), "malformed nbf claim"),
        (sign(RSA_KEY, iss="https://evil.example"), "wrong issuer"),
        (sign(RSA_KEY, aud="someone-else"), "wrong audience"),
        (sign(RSA_KEY, aud=["a", "b"]), "wrong audience"),
        (sign(RSA_KEY, client_id=None, sub=None), "missing client claim"),
        (sign(RSA_KEY, scope=42), "malformed scope claim"),
        (hand_built({"alg": "none", "kid": "rsa-1"}, None), "algorithm not allowed"),
        (
            hand_built({"alg": "HS256", "kid": "rsa-1"}, RSA_KEY.as_pem(private=False)),
            "algorithm not allowed",
        ),
        (sign(UNPUBLISHED_KEY, kid="stranger"), "unknown key id"),
        (sign(UNPUBLISHED_KEY, kid="rsa-1"), "signature invalid"),
        ("not-a-token", "token is not a JWT"),
    ],
)
async def test_bad_tokens_are_refused_with_a_stable_reason(
    make_verifier: VerifierFactory, token: str, reason: str
) -> None:
    """Each defect is refused with its own reason, which never repeats the token."""
    harness = make_verifier()

    error = await refusal(harness, token)

    assert error.reason == reason
    assert not isinstance(error, JwksUnavailable)


@pytest.mark.parametrize(
    "overrides",
    [{"exp": START - 29}, {"nbf": START + 29}, {"aud": ["other", AUDIENCE]}],
)
async def test_leeway_and_audience_lists_are_honoured(
    make_verifier: VerifierFactory, overrides: dict[str, Any]
) -> None:
    """Clock skew within the leeway passes, as does an audience list holding ours."""
    harness = make_verifier()

    verified = await harness.verifier.verify(sign(RSA_KEY, **overrides))

    assert verified.caller == "acme"


async def test_token_is_refused_once_the_wall_clock_passes_exp_and_leeway(
    make_verifier: VerifierFactory,
) -> None:
    """Expiry follows the wall clock: valid at exp plus leeway minus one, not at it."""
    harness = make_verifier()
    token = sign(RSA_KEY)
    harness.wall.now = START + 300 + 29
    await harness.verifier.verify(token)

    harness.wall.now = START + 300 + 30
    error = await refusal(harness, token)

    assert error.reason == "token expired"


async def test_eddsa_verifies_when_configured(make_verifier: VerifierFactory) -> None:
    """An Ed25519 key verifies EdDSA tokens without joserfc's deprecation warning."""
    harness = make_verifier(algorithms=["EdDSA"])
    ed_key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
    harness.jwks.keys.append(ed_key)
    with pytest.warns(SecurityWarning):
        token = jwt.encode(
            {"alg": "EdDSA", "kid": "ed-1"}, claims(), ed_key, algorithms=["EdDSA"]
        )

    verified = await harness.verifier.verify(token)

    assert verified.caller == "acme"


async def test_tampered_payload_fails_the_signature(
    make_verifier: VerifierFactory,
) -> None:
    """Changing the claims of a signed token invalidates its signature."""
    harness = make_verifier()
    header, _, signature = sign(RSA_KEY).split(".")
    forged_claims = b64(json.dumps(claims(client_id="admin")).encode())
    forged = f"{header}.{forged_claims}.{signature}"

    error = await refusal(harness, forged)

    assert error.reason == "signature invalid"


async def test_rotated_key_is_fetched_once_then_verifies(
    make_verifier: VerifierFactory,
) -> None:
    """A token naming a newly published kid causes exactly one refetch."""
    harness = make_verifier()
    await harness.verifier.verify(sign(RSA_KEY))
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    harness.jwks.keys.append(rotated)
    harness.clock.now += 31

    first = await harness.verifier.verify(sign(rotated))
    second = await harness.verifier.verify(sign(rotated))

    assert first.caller == second.caller == "acme"
    assert harness.jwks.requests == 2


async def test_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    make_verifier: VerifierFactory,
) -> None:
    """Fifty concurrent random kids share one refetch, and more inside the interval
    cause none."""
    harness = make_verifier()
    await harness.verifier.verify(sign(RSA_KEY))
    harness.clock.now += 31

    def strangers() -> list[str]:
        return [sign(UNPUBLISHED_KEY, kid=secrets.token_hex(8)) for _ in range(50)]

    first_flood = await asyncio.gather(
        *(harness.verifier.verify(token) for token in strangers()),
        return_exceptions=True,
    )
    after_first = harness.jwks.requests
    harness.clock.now += 29
    second_flood = await asyncio.gather(
        *(harness.verifier.verify(token) for token in strangers()),
        return_exceptions=True,
    )

    reasons = {getattr(error, "reason", error) for error in first_flood + second_flood}
    assert reasons == {"unknown key id"}
    assert after_first == 2
    assert harness.jwks.requests == 2


async def test_concurrent_unknown_kids_share_one_fetch_in_flight(
    make_verifier: VerifierFactory,
) -> None:
    """With no refetch interval at all, concurrent misses still share one request."""
    harness = make_verifier(jwks_refetch_min_interval_s=0)
    await harness.verifier.verify(sign(RSA_KEY))
    tokens = [sign(UNPUBLISHED_KEY, kid=f"stranger-{n}") for n in range(50)]

    results = await asyncio.gather(
        *(harness.verifier.verify(token) for token in tokens),
        return_exceptions=True,
    )

    assert all(isinstance(result, InvalidJwt) for result in results)
    assert harness.jwks.requests == 2


async def test_keys_are_refetched_after_the_cache_lifetime(
    make_verifier: VerifierFactory,
) -> None:
    """Keys older than jwks_cache_s are fetched again before use."""
    harness = make_verifier(jwks_cache_s=60)
    await harness.verifier.verify(sign(EC_KEY, "ES256"))

    harness.clock.now += 59
    await harness.verifier.verify(sign(EC_KEY, "ES256"))
    harness.clock.now += 1
    await harness.verifier.verify(sign(EC_KEY, "ES256"))

    assert harness.jwks.requests == 2


async def test_jwks_down_at_first_use_is_unavailable(
    make_verifier: VerifierFactory, logs: LogCapture
) -> None:
    """Without any keys a failing JWKS answers JwksUnavailable, retried per interval."""
    harness = make_verifier()
    harness.jwks.status = 503

    first = await refusal(harness, sign(RSA_KEY))
    second = await refusal(harness, sign(RSA_KEY))

    assert isinstance(first, JwksUnavailable)
    assert isinstance(second, JwksUnavailable)
    assert first.reason == "signing keys unavailable"
    assert second.retry_after_s == 30
    assert harness.jwks.requests == 1
    [event] = logs.events("inbound.jwks_refresh_failed")
    assert event["reason"] == "JWKS endpoint answered 503"
    assert "html" not in logs.text


async def test_jwks_down_after_a_good_fetch_keeps_cached_keys(
    make_verifier: VerifierFactory, logs: LogCapture
) -> None:
    """Cached keys keep verifying while the JWKS fails, warned once per streak."""
    harness = make_verifier(jwks_cache_s=60)
    await harness.verifier.verify(sign(RSA_KEY))
    harness.jwks.status = 500

    harness.clock.now += 61
    first = await harness.verifier.verify(sign(RSA_KEY))
    harness.clock.now += 31
    second = await harness.verifier.verify(sign(EC_KEY, "ES256"))

    assert first.caller == second.caller == "acme"
    assert harness.jwks.requests == 3
    [event] = logs.events("inbound.jwks_refresh_failed")
    assert event["has_cached_keys"] is True


async def test_redirects_from_the_jwks_url_are_not_followed(
    make_verifier: VerifierFactory,
) -> None:
    """A JWKS URL that redirects is a failure, not a hop to wherever it points."""
    harness = make_verifier(path="/moved")

    error = await refusal(harness, sign(RSA_KEY))

    assert isinstance(error, JwksUnavailable)
    assert harness.jwks.requests == 0


async def test_algorithms_outside_the_config_are_refused_before_key_lookup(
    make_verifier: VerifierFactory,
) -> None:
    """An ES256 token is refused when only RS256 is configured, without a fetch."""
    harness = make_verifier(algorithms=["RS256"])

    error = await refusal(harness, sign(EC_KEY, "ES256"))

    assert error.reason == "algorithm not allowed"
    assert harness.jwks.requests == 0
