"""The Redis store's lease, fencing, compare-and-delete and waiting, on a real Redis.

Two ``RedisTokenStore`` objects play two replicas; a Sentinel and a one-node Cluster
show the other ways of reaching Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from proxy.redis_store import RedisSlot, RedisTokenStore, open_token_store
from proxy.store_config import TokenStoreConfig
from proxy.token_store import TOKEN_KEY_ENV, Lease, SharedToken
from tests.conftest import LogCapture
from tests.redis_server import (  # noqa: F401 - the fixtures register by import
    MISSING,
    REDIS_SERVER,
    RedisServer,
    redis_fixture,
    redis_server_fixture,
    start_cluster_node,
    start_sentinel,
)

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=MISSING)

REQUEST_KEY = '{"client_id": "oms", "token_url": "https://idp.example/token"}'
OpenSlot = Callable[..., RedisSlot]


@pytest.fixture(autouse=True)
def token_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_KEY_ENV, Fernet.generate_key().decode())


@pytest.fixture
async def open_slot(redis: RedisServer) -> AsyncIterator[OpenSlot]:
    """A slot of a new store (a new replica) on the test's Redis; closed at the end."""
    stores: list[RedisTokenStore] = []

    def open_one(**settings: Any) -> RedisSlot:
        config = TokenStoreConfig.model_validate(
            {"kind": "redis", "url": redis.url, **settings}
        )
        stores.append(RedisTokenStore.from_config(config))
        return stores[-1].slot("iv", REQUEST_KEY)

    yield open_one
    for store in stores:
        await store.close()


def shared_token(
    lease: Lease, value: str = "token-1", life_s: float = 60
) -> SharedToken:
    now = time.time()
    return SharedToken(value, "Bearer", now, now + life_s, lease.fence)


def anything(_entry: SharedToken) -> bool:
    return True


async def test_one_lease_at_a_time_with_growing_fences(open_slot: OpenSlot) -> None:
    """The first claim gets a lease; another replica's claim gives up waiting."""
    first, second = open_slot(), open_slot(wait_for_peer_s=0)

    lease = await first.claim(anything)
    other = await second.claim(anything)
    await first.release(lease)  # type: ignore[arg-type]
    after = await second.claim(anything)

    assert isinstance(lease, Lease)
    assert other is None
    assert isinstance(after, Lease)
    assert after.fence > lease.fence


async def test_a_lease_that_ran_out_cannot_overwrite_a_newer_token(
    open_slot: OpenSlot, logs: LogCapture
) -> None:
    """The write checks its lease: a slow replica's token stays its own."""
    settings = {"lock_lease_s": 0.3, "operation_timeout_s": 0.1, "wait_for_peer_s": 0}
    slow, quick = open_slot(**settings), open_slot(**settings)
    slow_lease = await slow.claim(anything)
    assert isinstance(slow_lease, Lease)

    await asyncio.sleep(0.4)
    quick_lease = await quick.claim(anything)
    assert isinstance(quick_lease, Lease)
    assert await quick.publish(quick_lease, shared_token(quick_lease, "newer"))
    late = await slow.publish(slow_lease, shared_token(slow_lease, "older"))
    stored = await quick.read()

    assert late is False
    assert stored is not None
    assert stored.value == "newer"
    assert len(logs.events("token_store.lease_lost")) == 1


async def test_a_late_401_does_not_discard_the_replacement(open_slot: OpenSlot) -> None:
    """Compare-and-delete: only the entry written under the refused fence goes."""
    slot = open_slot()
    first = await slot.claim(anything)
    assert isinstance(first, Lease)
    await slot.publish(first, shared_token(first, "first"))
    second = await slot.claim(lambda entry: False)
    assert isinstance(second, Lease)
    await slot.publish(second, shared_token(second, "second"))

    await slot.discard(first.fence)
    kept = await slot.read()
    await slot.discard(second.fence)
    gone = await slot.read()

    assert kept is not None
    assert kept.value == "second"
    assert gone is None


async def test_a_waiting_replica_takes_the_token_its_peer_publishes(
    open_slot: OpenSlot,
) -> None:
    """Told by pub/sub, the waiter reads the peer's token instead of fetching."""
    holder, waiter = open_slot(), open_slot(wait_for_peer_s=5)
    lease = await holder.claim(anything)
    assert isinstance(lease, Lease)

    waiting = asyncio.create_task(waiter.claim(anything))
    await asyncio.sleep(0.3)
    await holder.publish(lease, shared_token(lease, "from-peer"))
    published_at = time.monotonic()
    claimed = await waiting

    assert isinstance(claimed, SharedToken)
    assert claimed.value == "from-peer"
    assert time.monotonic() - published_at < 0.5


async def test_a_peer_that_fails_hands_the_lease_on(open_slot: OpenSlot) -> None:
    """A released lease wakes the waiter, which takes the next lease itself."""
    holder, waiter = open_slot(), open_slot(wait_for_peer_s=5)
    lease = await holder.claim(anything)
    assert isinstance(lease, Lease)

    waiting = asyncio.create_task(waiter.claim(anything))
    await asyncio.sleep(0.2)
    await holder.release(lease)
    claimed = await asyncio.wait_for(waiting, 1.0)

    assert isinstance(claimed, Lease)
    assert claimed.fence == lease.fence + 1


async def test_an_entry_under_another_key_reads_as_absent_and_is_logged_once(
    open_slot: OpenSlot, monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """The wrong key: absent, no lease taken over it, one warning per streak."""
    writer = open_slot()
    lease = await writer.claim(anything)
    assert isinstance(lease, Lease)
    await writer.publish(lease, shared_token(lease, "estate-token"))
    monkeypatch.setenv(TOKEN_KEY_ENV, Fernet.generate_key().decode())
    stranger = open_slot()

    reads = [await stranger.read() for _ in range(3)]
    claimed = await stranger.claim(anything)

    assert reads == [None, None, None]
    assert claimed is None
    assert len(logs.events("token_store.undecryptable")) == 1
    assert "estate-token" not in logs.text


async def test_a_dead_redis_answers_empty_at_once_and_is_reprobed_later(
    open_slot: OpenSlot, redis: RedisServer, logs: LogCapture
) -> None:
    """Down: one warning, nothing sent until the re-probe; back: one recovery."""
    slot = open_slot(reprobe_interval_s=0.3)
    redis.kill()

    started = time.monotonic()
    answers = [await slot.read(), await slot.claim(anything), await slot.read()]
    elapsed_s = time.monotonic() - started
    redis.start()
    await asyncio.sleep(0.35)
    back = await slot.claim(anything)

    assert answers == [None, None, None]
    assert elapsed_s < 0.5
    assert len(logs.events("token_store.unavailable")) == 1
    assert isinstance(back, Lease)
    assert len(logs.events("token_store.recovered")) == 1


async def test_sentinel_finds_the_primary(redis: RedisServer, tmp_path: Path) -> None:
    """Through Sentinel, two replicas share an entry on the primary it names."""
    sentinel = start_sentinel(tmp_path, redis, "tokens")
    settings = {
        "kind": "redis",
        "sentinels": [f"127.0.0.1:{sentinel.port}"],
        "sentinel_master": "tokens",
    }
    config = TokenStoreConfig.model_validate(settings)
    stores = [RedisTokenStore.from_config(config) for _ in range(2)]
    try:
        writer, reader = (store.slot("iv", REQUEST_KEY) for store in stores)
        lease = await writer.claim(anything)
        assert isinstance(lease, Lease)
        await writer.publish(lease, shared_token(lease, "via-sentinel"))
        stored = await reader.read()
    finally:
        for store in stores:
            await store.close()
        sentinel.kill()

    assert stored is not None
    assert stored.value == "via-sentinel"


async def test_a_cluster_keeps_each_sources_keys_in_one_slot(tmp_path: Path) -> None:
    """In a Cluster the scripts run (one hash slot per source) and waiters poll."""
    node = start_cluster_node(tmp_path)
    url = f"redis://127.0.0.1:{node.port}"
    config = TokenStoreConfig.model_validate(
        {"kind": "redis", "url": url, "cluster": True, "wait_for_peer_s": 5}
    )
    stores = [RedisTokenStore.from_config(config) for _ in range(2)]
    try:
        holder, waiter = (store.slot("iv", REQUEST_KEY) for store in stores)
        lease = await holder.claim(anything)
        assert isinstance(lease, Lease)
        waiting = asyncio.create_task(waiter.claim(anything))
        await asyncio.sleep(0.2)
        await holder.publish(lease, shared_token(lease, "via-cluster"))
        claimed = await asyncio.wait_for(waiting, 2.0)
    finally:
        for store in stores:
            await store.close()
        node.kill()

    assert isinstance(claimed, SharedToken)
    assert claimed.value == "via-cluster"


async def test_a_replica_with_the_new_key_first_still_reads_the_old_entries(
    open_slot: OpenSlot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key rotation: "new,old" encrypts with the new key and reads both."""
    old_key = Fernet.generate_key().decode()
    monkeypatch.setenv(TOKEN_KEY_ENV, old_key)
    writer = open_slot()
    lease = await writer.claim(anything)
    assert isinstance(lease, Lease)
    await writer.publish(lease, shared_token(lease, "under-the-old-key"))

    monkeypatch.setenv(TOKEN_KEY_ENV, f"{Fernet.generate_key().decode()},{old_key}")
    stored = await open_slot().read()

    assert stored is not None
    assert stored.value == "under-the-old-key"


async def test_the_store_is_named_in_logs_without_its_password(
    logs: LogCapture,
) -> None:
    """The URL's credentials never reach a log line."""
    config = TokenStoreConfig.model_validate(
        {
            "kind": "redis",
            "url": "rediss://user:pa55-Do-Not-Print@redis.internal:6380/1",
        }
    )

    store = open_token_store(config)
    assert store is not None
    await store.close()

    [opened] = logs.events("token_store.opened")
    assert opened["store"] == "rediss://redis.internal:6380/1"
    assert "pa55-Do-Not-Print" not in logs.text
