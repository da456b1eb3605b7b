"""Replicas sharing one token through a real redis-server.

One ``redis-server`` runs per session on a free port; each test starts from an empty
one, and a test that kills or freezes it leaves it running again. Replicas are full
proxies (``ProxyTestServer``) in front of the same identity provider and upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet

from proxy.config import ProxyConfig
from proxy.demo.identity_provider import IdentityProvider
from proxy.store_config import TokenStoreConfig
from proxy.token_store import TOKEN_KEY_ENV
from tests.conftest import (
    AiohttpClient,
    LogCapture,
    ProxyClient,
    ProxyTestServer,
    RecordingUpstream,
    proxy_config,
    sample,
)
from tests.redis_server import (  # noqa: F401 - the fixtures register by import
    MISSING,
    REDIS_SERVER,
    RedisServer,
    redis_fixture,
    redis_server_fixture,
)

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=MISSING)

LIFETIME_S = 2
CALL = "/inventory/T/v1/items/1"
Client = ProxyClient
Replicas = Callable[..., Awaitable[list[Client]]]


@pytest.fixture(autouse=True)
def token_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(TOKEN_KEY_ENV, key)
    return key


def replica_config(
    idp_server: TestServer, upstream_server: TestServer, store: dict[str, Any]
) -> ProxyConfig:
    config = proxy_config(
        str(idp_server.make_url("/oauth2/token")),
        str(upstream_server.make_url("/inventory")),
        source={"refresh_margin_s": 0.25, "cold_start_wait_s": 5},
    )
    token_store = TokenStoreConfig.model_validate(store)
    return config.model_copy(update={"token_store": token_store})


@pytest.fixture
def start_replicas(
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
    aiohttp_client: AiohttpClient,
    logs: LogCapture,
    redis: RedisServer,
) -> Replicas:
    """Start ``count`` proxies sharing the session's Redis; tokens live 2 s."""
    idp.token_lifetime_s = LIFETIME_S

    async def start(count: int, **store: Any) -> list[Client]:
        settings = {"kind": "redis", "url": redis.url, "reprobe_interval_s": 0.5}
        config = replica_config(idp_server, upstream[1], {**settings, **store})
        return [await aiohttp_client(ProxyTestServer(config)) for _ in range(count)]

    return start


async def call(client: Client) -> int:
    async with client.get(CALL) as response:
        await response.read()
        return response.status


async def drive(
    replicas: list[Client], duration_s: float, workers: int = 4
) -> list[int]:
    """Calls from ``workers`` loops per replica for ``duration_s``; their statuses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s
    statuses: list[int] = []

    async def worker(client: Client) -> None:
        while loop.time() < deadline:
            statuses.append(await call(client))
            await asyncio.sleep(0.005)

    await asyncio.gather(
        *(worker(client) for client in replicas for _ in range(workers))
    )
    return statuses


def bearer_tokens(upstream: RecordingUpstream, since: int = 0) -> set[str]:
    headers = (call.headers.get("Authorization", "") for call in upstream.calls[since:])
    return {header.removeprefix("Bearer ") for header in headers if header}


def assert_nothing_secret_logged(
    upstream: RecordingUpstream, logs: LogCapture, token_key: str
) -> None:
    tokens = bearer_tokens(upstream)
    assert tokens
    for secret in (*tokens, token_key):
        assert secret not in logs.text


async def test_four_replicas_make_one_token_request_per_lifetime(
    start_replicas: Replicas,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
    token_key: str,
) -> None:
    """Four proxies under load share one token request per token lifetime."""
    replicas = await start_replicas(4)
    started = time.monotonic()

    statuses = await drive(replicas, 5.0)

    lifetimes = math.ceil((time.monotonic() - started) / LIFETIME_S)
    assert len(statuses) > 400
    assert set(statuses) == {200}
    # Alone, each replica would ask once per lifetime or more: 4 x lifetimes.
    assert idp.token_requests <= lifetimes + 1
    assert len(logs.events("token.adopted")) >= 3 * (idp.token_requests - 1)
    assert not logs.events("token_store.unavailable")
    assert_nothing_secret_logged(upstream[0], logs, token_key)


async def test_a_revoked_token_is_replaced_once_for_every_replica(
    start_replicas: Replicas,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """A token refused by the upstream costs the estate one token request."""
    idp.token_lifetime_s = 60
    replicas = await start_replicas(4)
    assert [await call(client) for client in replicas] == [200] * 4
    assert idp.token_requests == 1

    idp.revoke()
    since = len(upstream[0].calls)
    statuses = await asyncio.gather(*(call(c) for c in replicas for _ in range(5)))

    assert set(statuses) == {200}
    assert idp.token_requests == 2
    authorized = [call for call in upstream[0].calls[since:] if call.authorized]
    assert len(authorized) == 20
    assert {c.headers["Authorization"] for c in authorized} == {
        f"Bearer {idp.last_token}"
    }


async def test_redis_outage_costs_no_call_and_is_logged_once_per_replica(
    start_replicas: Replicas,
    redis: RedisServer,
    idp: IdentityProvider,
    logs: LogCapture,
) -> None:
    """Killed and restarted, Redis costs no call: one warning, then a recovery."""
    replicas = await start_replicas(3)
    load = asyncio.create_task(drive(replicas, 7.0))

    await asyncio.sleep(1.0)
    redis.kill()
    await asyncio.sleep(2.5)
    redis.start()
    statuses = await load

    assert set(statuses) == {200}
    unavailable = logs.events("token_store.unavailable")
    assert 1 <= len(unavailable) <= len(replicas)
    assert len(logs.events("token_store.recovered")) == len(unavailable)
    assert all(event["level"] == "warning" for event in unavailable)


async def test_a_hung_redis_delays_a_refresh_by_the_operation_timeout_only(
    start_replicas: Replicas,
    redis: RedisServer,
    idp: IdentityProvider,
    logs: LogCapture,
) -> None:
    """A Redis that stops answering costs a bounded wait, never a failed call."""
    idp.token_lifetime_s = 60
    replicas = await start_replicas(2, operation_timeout_s=0.2)
    assert [await call(client) for client in replicas] == [200, 200]

    idp.revoke()
    redis.pause()
    try:
        started = time.monotonic()
        statuses = [await call(client) for client in replicas for _ in range(3)]
        elapsed_s = time.monotonic() - started
    finally:
        redis.resume()
    await asyncio.sleep(0.6)
    refreshed = await replicas[0].post("/tokens/iv/refresh")

    assert set(statuses) == {200}
    assert elapsed_s < 2.0
    assert len(logs.events("token_store.unavailable")) == 2
    assert refreshed.status == 200
    assert len(logs.events("token_store.recovered")) == 1


async def test_a_replica_with_the_wrong_key_fetches_alone_and_logs_once(
    start_replicas: Replicas,
    redis: RedisServer,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry it cannot decrypt is absent to that replica, and left alone."""
    idp.token_lifetime_s = 60
    estate = await start_replicas(2)
    assert [await call(client) for client in estate] == [200, 200]
    estate_token = idp.last_token
    with redis.client() as client:
        [key] = client.keys("inventory-proxy:token:*")
        stored = client.hgetall(key)

    monkeypatch.setenv(TOKEN_KEY_ENV, Fernet.generate_key().decode())
    [stranger] = await start_replicas(1)
    statuses = [await call(stranger) for _ in range(3)]
    for _ in range(3):
        assert (await stranger.post("/tokens/iv/refresh")).status == 200
    statuses += [await call(client) for client in (stranger, *estate)]

    assert set(statuses) == {200}
    assert len(logs.events("token_store.undecryptable")) == 1
    assert idp.token_requests == 5
    with redis.client() as client:
        assert client.hgetall(key) == stored
    assert upstream[0].calls[-1].headers["Authorization"] == f"Bearer {estate_token}"
    assert all(token not in logs.text for token in bearer_tokens(upstream[0]))


async def test_tokens_are_encrypted_at_rest_under_a_key_of_the_request(
    start_replicas: Replicas,
    redis: RedisServer,
    idp: IdentityProvider,
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
) -> None:
    """Redis holds a fence and a Fernet blob, keyed by a digest of the request."""
    [replica] = await start_replicas(1)
    assert await call(replica) == 200
    config = replica_config(idp_server, upstream[1], {})
    source = config.token_sources["iv"]
    request_key = source.request_key()  # type: ignore[union-attr]
    digest = hashlib.sha256(request_key.encode()).hexdigest()

    with redis.client() as client:
        everything = {key: client.dump(key) for key in client.keys("*")}
        entry = client.hgetall(f"inventory-proxy:token:{{{digest}}}")

    assert entry[b"fence"] == b"1"
    assert idp.last_token is not None
    token = idp.last_token.encode()
    assert all(token not in (value or b"") for value in entry.values())
    assert all(token not in (value or b"") for value in everything.values())


async def test_a_replica_that_adopts_reports_the_expiry_but_no_request(
    start_replicas: Replicas, idp: IdentityProvider
) -> None:
    """Metrics: one replica fetched; the other adopted, with the right expiry."""
    idp.token_lifetime_s = 60
    replicas = await start_replicas(2)
    assert [await call(replica) for replica in replicas] == [200, 200]

    # Both prefetch at start-up, so which one wins the lease is not fixed.
    texts = [await (await replica.get("/metrics")).text() for replica in replicas]

    requests = "inventory_proxy_token_requests_total"
    counts = [sample(text, requests, source="iv", outcome="ok") for text in texts]
    assert sorted(counts, key=lambda count: count is None) == [1.0, None]
    adopter = texts[counts.index(None)]
    expires_in = sample(
        adopter, "inventory_proxy_token_expires_in_seconds", source="iv"
    )
    assert expires_in is not None
    assert 50 < expires_in <= 60
