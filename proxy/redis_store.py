"""Redis as the shared token store: the keys, the Lua scripts, the lease, the wait.

Per token source, with ``h`` the SHA-256 of everything that shapes its token request
(``OAuth2SourceConfig.request_key()``, where the secret is itself a digest)::

    PREFIX:token:{h}      hash: fence (plain), blob (Fernet: token, times, fence)
    PREFIX:lock:{h}       the lease: a random owner value, PX lock_lease_s
    PREFIX:fence:{h}      the fencing counter, INCR once per lease granted
    PREFIX:refreshed:{h}  pub/sub channel: published after a write or a release

The braces make the keys one hash slot, so each script touches one Cluster node.
Every step that must not interleave with another replica's is one Lua script:
taking the lease and its fence together; writing only while the lease is the
writer's and its fence beats the stored one; releasing only one's own lease;
deleting after a 401 only the entry written under the refused token's fence.

Each operation is bounded by ``operation_timeout_s``, its one reconnect included: a
failure marks the store down (``StoreHealth``) and the holder carries on alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from yarl import URL

from proxy.config import ConfigError
from proxy.store_config import TokenStoreConfig
from proxy.token_store import (
    TOKEN_KEY_ENV,
    Lease,
    SharedToken,
    StoreHealth,
    TokenCipher,
    TokenKeyError,
    token_cipher_from_env,
)

log = structlog.get_logger("proxy.token_store")

T = TypeVar("T")
_POLL_S = 0.1

# KEYS: lock, fence counter. ARGV: owner, lease ms. The new fence, or 0 if taken.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""
# KEYS: token, lock. ARGV: owner, fence, blob, ttl ms, channel.
# 1 written; 0 the lease is no longer the writer's; -1 a newer fence is stored.
_WRITE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local stored = tonumber(redis.call('HGET', KEYS[1], 'fence'))
if stored and stored >= tonumber(ARGV[2]) then return -1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fence', ARGV[2], 'blob', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""
# KEYS: lock. ARGV: owner, channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0
"""
# KEYS: token. ARGV: the refused token's fence.
_DISCARD = """
if redis.call('HGET', KEYS[1], 'fence') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def open_token_store(config: TokenStoreConfig) -> RedisTokenStore | None:
    """The shared store ``config`` asks for, or None to keep tokens in memory.

    Raises ``ConfigError`` naming ``token_store`` when the key is missing or bad.
    """
    if config.kind == "memory":
        return None
    try:
        store = RedisTokenStore.from_config(config)
    except TokenKeyError as exc:
        raise ConfigError(
            [("token_store", f'kind = "redis" needs {TOKEN_KEY_ENV}: {exc}')]
        ) from None
    log.info("token_store.opened", kind=config.kind, store=store.health.target)
    return store


class _Unavailable(Exception):
    """The store did not answer in time, or refused; already logged by health."""


class RedisTokenStore:
    """One Redis connection pool shared by the slots of every token source."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        cipher: TokenCipher,
        config: TokenStoreConfig,
        *,
        target: str,
        sentinel: Sentinel | None = None,
    ) -> None:
        self.client = client
        self.cipher = cipher
        self.config = config
        self.health = StoreHealth(target, config.reprobe_interval_s)
        self.pubsub = not isinstance(client, RedisCluster)
        self._sentinel = sentinel
        self.acquire_script = client.register_script(_ACQUIRE)
        self.write_script = client.register_script(_WRITE)
        self.release_script = client.register_script(_RELEASE)
        self.discard_script = client.register_script(_DISCARD)

    @classmethod
    def from_config(
        cls, config: TokenStoreConfig, environ: Mapping[str, str] | None = None
    ) -> RedisTokenStore:
        """A store for ``config``; connects lazily, so Redis may be down at start."""
        cipher = token_cipher_from_env(os.environ if environ is None else environ)
        options: dict[str, Any] = {
            "socket_timeout": config.operation_timeout_s,
            "socket_connect_timeout": config.operation_timeout_s,
            # One immediate reconnect, for a pooled connection that a Redis restart
            # broke; the operation's timeout bounds both attempts together.
            "retry": Retry(NoBackoff(), 1),
        }
        if config.sentinel_master is not None:
            password = config.password.get_secret_value() if config.password else None
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8.2
                config.sentinel_addresses(),
                sentinel_kwargs=dict(options),
                password=password,
                db=config.db,
                **options,
            )
            client = sentinel.master_for(config.sentinel_master)
            target = f"sentinel:{config.sentinel_master}"
            return cls(client, cipher, config, target=target, sentinel=sentinel)

        assert config.url is not None  # noqa: S101 - checked by TokenStoreConfig
        url = config.url.get_secret_value()
        client_class = RedisCluster if config.cluster else Redis
        client = client_class.from_url(url, **options)
        return cls(client, cipher, config, target=_describe(url))

    def slot(self, source: str, request_key: str) -> RedisSlot:
        """The entry of the token source whose requests ``request_key`` describes."""
        digest = hashlib.sha256(request_key.encode()).hexdigest()
        return RedisSlot(self, source, digest)

    async def run(
        self, operation: Callable[[], Awaitable[T]], *, waiting_s: float = 0.0
    ) -> T:
        """``operation`` bounded in time, or ``_Unavailable``; health keeps count.

        ``waiting_s`` is time the operation spends waiting on purpose (for a
        message), allowed on top of ``operation_timeout_s``.
        """
        if not self.health.may_try():
            raise _Unavailable
        try:
            async with asyncio.timeout(self.config.operation_timeout_s + waiting_s):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            self.health.failed(_reason(exc))
            raise _Unavailable from None
        self.health.succeeded()
        return result

    @contextlib.asynccontextmanager
    async def notices(self, channel: str) -> AsyncIterator[Callable[[float], Any]]:
        """A wait for the next message on ``channel``, or a plain sleep in a Cluster."""
        if not self.pubsub:
            yield asyncio.sleep
            return
        pubsub: PubSub = self.client.pubsub()
        try:
            await self.run(lambda: pubsub.subscribe(channel))

            async def wait(timeout_s: float) -> None:
                await self.run(
                    lambda: pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=timeout_s
                    ),
                    waiting_s=timeout_s,
                )

            yield wait
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.config.operation_timeout_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def close(self) -> None:
        """Close the pool (and the Sentinel connections); called on shutdown."""
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()


class RedisSlot:
    """One token source's entry; implements ``proxy.token_store.SharedSlot``."""

    def __init__(self, store: RedisTokenStore, source: str, digest: str) -> None:
        self._store = store
        self._source = source
        self._slot_id = digest
        prefix = store.config.key_prefix
        self._token_key = f"{prefix}:token:{{{digest}}}"
        self._lock_key = f"{prefix}:lock:{{{digest}}}"
        self._fence_key = f"{prefix}:fence:{{{digest}}}"
        self._channel = f"{prefix}:refreshed:{{{digest}}}"
        self._unreadable = False

    async def read(self) -> SharedToken | None:
        with contextlib.suppress(_Unavailable):
            return await self._read()
        return None

    async def claim(
        self, usable: Callable[[SharedToken], bool]
    ) -> SharedToken | Lease | None:
        # An entry this replica cannot decrypt is another key's: leave it alone.
        if self._unreadable:
            return None
        with contextlib.suppress(_Unavailable):
            lease = await self._try_lease()
            if lease is not None:
                return await self._confirm(lease, usable)
            if self._store.config.wait_for_peer_s > 0:
                return await self._await_peer(usable)
        return None

    async def publish(self, lease: Lease, token: SharedToken) -> bool:
        store = self._store
        ttl_ms = int((token.expires_at - time.time()) * 1000)
        if ttl_ms <= 0 or token.fence != lease.fence:
            await self.release(lease)
            return False
        blob = store.cipher.seal(self._slot_id, token)
        keys = [self._token_key, self._lock_key]
        args: list[str | bytes | int] = [
            lease.owner,
            lease.fence,
            blob,
            ttl_ms,
            self._channel,
        ]
        try:
            written = await store.run(lambda: store.write_script(keys=keys, args=args))
        except _Unavailable:
            return False
        if written != 1:
            log.warning(
                "token_store.lease_lost",
                source=self._source,
                fence=lease.fence,
                hint="the token request outlasted lock_lease_s; this token stays "
                "local to the replica",
            )
        return bool(written == 1)

    async def release(self, lease: Lease) -> None:
        store = self._store
        args = [lease.owner, self._channel]
        with contextlib.suppress(_Unavailable):
            await store.run(
                lambda: store.release_script(keys=[self._lock_key], args=args)
            )

    async def discard(self, fence: int) -> None:
        store = self._store
        with contextlib.suppress(_Unavailable):
            await store.run(
                lambda: store.discard_script(keys=[self._token_key], args=[fence])
            )

    async def _read(self) -> SharedToken | None:
        client = self._store.client
        fence, blob = await self._store.run(
            lambda: client.hmget(self._token_key, ["fence", "blob"])
        )
        if fence is None or not isinstance(blob, bytes):
            self._unreadable = False
            return None
        token = self._store.cipher.open(self._slot_id, int(fence), blob)
        if token is None and not self._unreadable:
            log.warning(
                "token_store.undecryptable",
                source=self._source,
                hint="INVENTORY_PROXY_TOKEN_KEY differs from the key that wrote the "
                "entry; this replica fetches its own tokens meanwhile",
            )
        self._unreadable = token is None
        return token

    async def _try_lease(self) -> Lease | None:
        store = self._store
        owner = secrets.token_hex(16)
        lease_ms = int(store.config.lock_lease_s * 1000)
        keys = [self._lock_key, self._fence_key]
        fence = await store.run(
            lambda: store.acquire_script(keys=keys, args=[owner, lease_ms])
        )
        return Lease(owner, int(fence)) if int(fence) > 0 else None

    async def _confirm(
        self, lease: Lease, usable: Callable[[SharedToken], bool]
    ) -> SharedToken | Lease | None:
        """Check again under the lease: a peer may have written just before."""
        entry = await self._read()
        if self._unreadable or (entry is not None and usable(entry)):
            await self.release(lease)
            return entry
        return lease

    async def _await_peer(
        self, usable: Callable[[SharedToken], bool]
    ) -> SharedToken | Lease | None:
        """Wait for the lease holder's token; take the lease if it gives up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._store.config.wait_for_peer_s
        async with self._store.notices(self._channel) as wait:
            while True:
                entry = await self._read()
                if self._unreadable:
                    return None
                if entry is not None and usable(entry):
                    return entry
                lease = await self._try_lease()
                if lease is not None:
                    return await self._confirm(lease, usable)
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    log.info(
                        "token_store.peer_timeout",
                        source=self._source,
                        waited_s=self._store.config.wait_for_peer_s,
                        hint="fetching alone; raise wait_for_peer_s if this repeats",
                    )
                    return None
                await wait(min(remaining_s, _POLL_S))


def _describe(url: str) -> str:
    """Where the store is, for logs: the URL without its credentials."""
    parsed = URL(url)
    if parsed.scheme == "unix":
        return f"unix:{parsed.path}"
    return str(parsed.with_user(None).with_query(None))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ResponseError):
        # Redis error replies start with a code: NOAUTH, READONLY, OOM, ...
        return f"{type(exc).__name__} {str(exc).split(' ', 1)[0]}"
    return type(exc).__name__
