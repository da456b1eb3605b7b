"""Partners: who may call, what they may do, and how fast."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import AiohttpServer, LogCapture, ProxyFactory, RecordingUpstream

MARKETPLACE_KEY = "mkt-key-7Q2vX9pL3sR8tY1wZ5"
CARRIER_KEY = "car-key-4H6jK8mN0bV2cX4zA9"
ROTATED_KEY = "mkt-key-next-3F5gH7jK9lP1"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


PARTNERS: dict[str, Any] = {
    "server": {"trusted_networks": []},
    "clients": {
        "marketplace": {
            "api_key_sha256": [digest(MARKETPLACE_KEY), digest(ROTATED_KEY)],
            "allow": ["inventory:POST", "inventory:GET"],
        },
        "carrier": {
            "api_key_sha256": [digest(CARRIER_KEY)],
            "allow": ["delivery:*"],
            "rate_per_s": 1,
            "burst": 2,
        },
    },
}


@pytest.fixture
async def partner_proxy(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> TestClient[Any, Any]:
    """The proxy with two partners and nobody trusted by address."""
    return await make_proxy(
        server=PARTNERS["server"],
        clients=PARTNERS["clients"],
        upstreams={
            "delivery": {
                "path_prefix": "/promising",
                "base_url": str(upstream[1].make_url("/promising")),
                "token_source": "iv",
            }
        },
    )


@pytest.mark.parametrize(
    ("key", "method", "path", "status"),
    [
        (MARKETPLACE_KEY, "POST", "/inventory/T/v1/availability/network", 200),
        (MARKETPLACE_KEY, "GET", "/inventory/T/v1/items/1", 200),
        (ROTATED_KEY, "POST", "/inventory/T/v1/availability/network", 200),
        (MARKETPLACE_KEY, "DELETE", "/inventory/T/v1/reservations/1", 403),
        (MARKETPLACE_KEY, "POST", "/promising/T/v1/delivery-dates", 403),
        (CARRIER_KEY, "POST", "/promising/T/v1/delivery-dates", 200),
        (CARRIER_KEY, "GET", "/promising/T/v1/delivery-dates", 200),
        (CARRIER_KEY, "POST", "/inventory/T/v1/availability/network", 403),
        ("not-a-key", "POST", "/inventory/T/v1/availability/network", 401),
    ],
)
async def test_grants_decide_which_upstreams_and_methods_a_partner_reaches(
    partner_proxy: TestClient[Any, Any],
    upstream: tuple[RecordingUpstream, TestServer],
    key: str,
    method: str,
    path: str,
    status: int,
) -> None:
    """Each client reaches exactly its granted upstream:method pairs."""
    response = await partner_proxy.request(method, path, headers={"X-API-Key": key})

    assert response.status == status
    assert len(upstream[0].calls) == (1 if status == 200 else 0)
    if status != 200:
        body = await response.json()
        assert body["error"] == {401: "unauthenticated", 403: "forbidden"}[status]


async def test_key_may_come_as_a_bearer_token(
    partner_proxy: TestClient[Any, Any],
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Authorization: Bearer <key> works like X-API-Key, and neither goes upstream."""
    response = await partner_proxy.get(
        "/inventory/T/v1/items/1",
        headers={"Authorization": f"Bearer {MARKETPLACE_KEY}"},
    )

    [call] = upstream[0].calls
    assert response.status == 200
    assert call.authorized
    assert MARKETPLACE_KEY not in str(call.headers)


async def test_api_key_header_is_not_forwarded(
    partner_proxy: TestClient[Any, Any],
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """The partner's X-API-Key never reaches the upstream."""
    await partner_proxy.get(
        "/inventory/T/v1/items/1", headers={"X-API-Key": MARKETPLACE_KEY}
    )

    [call] = upstream[0].calls
    assert "X-API-Key" not in call.headers


async def test_missing_credentials_get_a_401_challenge(
    partner_proxy: TestClient[Any, Any],
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """No credential: 401 with a Bearer challenge and no error code (RFC 6750 §3.1)."""
    response = await partner_proxy.get("/inventory/T/v1/items/1")

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="inventory-proxy"'
    assert (await response.json())["error"] == "unauthenticated"
    assert upstream[0].calls == []


async def test_bad_credentials_get_invalid_token_and_are_not_logged(
    partner_proxy: TestClient[Any, Any], logs: LogCapture
) -> None:
    """A wrong key: 401 invalid_token, and access.denied never shows the key."""
    response = await partner_proxy.get(
        "/inventory/T/v1/items/1", headers={"X-API-Key": "wrong-key-0000"}
    )

    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    [denied] = logs.events("access.denied")
    assert denied["status"] == 401
    assert denied["method"] == "GET"
    assert "wrong-key-0000" not in logs.text


async def test_forbidden_call_is_logged_with_client_upstream_and_method(
    partner_proxy: TestClient[Any, Any], logs: LogCapture
) -> None:
    """access.denied names who, where, what and why; never the credential."""
    await partner_proxy.post(
        "/promising/T/v1/delivery-dates", headers={"X-API-Key": MARKETPLACE_KEY}
    )

    [denied] = logs.events("access.denied")
    assert denied["client"] == "marketplace"
    assert denied["upstream"] == "delivery"
    assert denied["method"] == "POST"
    assert denied["status"] == 403
    assert "not allowed" in denied["reason"]
    assert MARKETPLACE_KEY not in logs.text


async def test_partner_over_its_rate_gets_429_with_retry_after(
    partner_proxy: TestClient[Any, Any],
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Burst 2 at 1/s: the third call in a row is refused, the others go through."""
    statuses = []
    for _ in range(3):
        response = await partner_proxy.get(
            "/promising/T/v1/x", headers={"X-API-Key": CARRIER_KEY}
        )
        statuses.append(response.status)

    assert statuses == [200, 200, 429]
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"] == "rate_limited"
    assert len(upstream[0].calls) == 2


async def test_one_partners_limit_does_not_slow_another(
    partner_proxy: TestClient[Any, Any],
) -> None:
    """Buckets are per client."""
    for _ in range(3):
        await partner_proxy.get("/promising/T/v1/x", headers={"X-API-Key": CARRIER_KEY})

    response = await partner_proxy.get(
        "/inventory/T/v1/items/1", headers={"X-API-Key": MARKETPLACE_KEY}
    )

    assert response.status == 200


async def test_health_probes_need_no_credentials(
    partner_proxy: TestClient[Any, Any],
) -> None:
    """/healthz answers anyone, so orchestrators can probe a partner-facing proxy."""
    response = await partner_proxy.get("/healthz")

    assert response.status == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Behind a trusted load balancer, the original client's address decides trust."""
    proxy = await make_proxy(
        server={
            "trusted_networks": ["10.0.0.0/8"],
            "trusted_proxies": ["127.0.0.1/32"],
        }
    )

    inside = await proxy.get("/inventory/x", headers={"X-Forwarded-For": "10.1.2.3"})
    outside = await proxy.get(
        "/inventory/x", headers={"X-Forwarded-For": "203.0.113.7"}
    )

    assert inside.status == 200
    assert outside.status == 401
    [call] = upstream[0].calls
    assert call.headers["X-Forwarded-For"] == "10.1.2.3, 127.0.0.1"


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """A caller cannot claim a trusted address by sending X-Forwarded-For."""
    proxy = await make_proxy(server={"trusted_networks": ["10.0.0.0/8"]})

    response = await proxy.get("/inventory/x", headers={"X-Forwarded-For": "10.1.2.3"})

    assert response.status == 401
    assert upstream[0].calls == []


class PartnerIdp:
    """A partner identity provider's signing key and JWKS endpoint."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "partner-1"})
        self.up = True

    async def jwks(self, _request: web.Request) -> web.Response:
        if not self.up:
            return web.Response(status=503)
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": "https://partner-idp.example",
            "aud": "inventory-proxy",
            "client_id": "acme-3pl",
            "scope": "inventory.read",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode({"alg": "RS256", "kid": "partner-1"}, payload, self.key)


@pytest.fixture
async def jwt_proxy(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> tuple[TestClient[Any, Any], PartnerIdp]:
    """The proxy accepting the partner IdP's tokens, with nobody trusted by address."""
    partner = PartnerIdp()
    app = web.Application()
    app.router.add_get("/jwks.json", partner.jwks)
    jwks_server = await aiohttp_server(app)
    proxy = await make_proxy(
        server={"trusted_networks": []},
        inbound={
            "jwt": {
                "jwks_url": str(jwks_server.make_url("/jwks.json")),
                "issuer": "https://partner-idp.example",
                "audience": "inventory-proxy",
                "scope_grants": {"inventory.read": ["inventory:GET"]},
                "rate_per_s": 100,
                "burst": 100,
            }
        },
    )
    return proxy, partner


async def test_partner_jwt_scopes_grant_access(
    jwt_proxy: tuple[TestClient[Any, Any], PartnerIdp],
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A valid partner JWT reaches what its scopes grant, and nothing else."""
    proxy, partner = jwt_proxy
    token = partner.token()
    auth = {"Authorization": f"Bearer {token}"}

    allowed = await proxy.get("/inventory/T/v1/items/1", headers=auth)
    refused = await proxy.post("/inventory/T/v1/reservations", headers=auth)

    assert allowed.status == 200
    assert refused.status == 403
    [call] = upstream[0].calls
    assert token not in str(call.headers)
    assert token not in logs.text
    assert logs.events("access.denied")[0]["client"] == "jwt:acme-3pl"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1_000_000}, "token expired"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"aud": "someone-else"}, "wrong audience"),
    ],
)
async def test_partner_jwt_that_fails_a_check_is_401(
    jwt_proxy: tuple[TestClient[Any, Any], PartnerIdp],
    upstream: tuple[RecordingUpstream, TestServer],
    claims: dict[str, Any],
    reason: str,
) -> None:
    """Expired, foreign or misdirected tokens are refused with the reason."""
    proxy, partner = jwt_proxy

    response = await proxy.get(
        "/inventory/T/v1/items/1",
        headers={"Authorization": f"Bearer {partner.token(**claims)}"},
    )

    assert response.status == 401
    assert reason in (await response.json())["detail"]
    assert upstream[0].calls == []


async def test_partner_keys_unavailable_is_503_not_401(
    jwt_proxy: tuple[TestClient[Any, Any], PartnerIdp],
) -> None:
    """When the JWKS cannot be fetched at all, partners are told to come back."""
    proxy, partner = jwt_proxy
    partner.up = False

    response = await proxy.get(
        "/inventory/T/v1/items/1",
        headers={"Authorization": f"Bearer {partner.token()}"},
    )

    assert response.status == 503
    assert (await response.json())["error"] == "auth_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
