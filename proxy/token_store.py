"""The token store shared by every replica of an estate, as a token holder sees it.

Each replica's holder (``proxy.shared_holder``) keeps its own promises (single
flight, refresh ahead, back-off, budget) and asks the store, on its refresh path
only, before it asks the identity provider. The store's invariants:

* **One refresher at a time.** A replica fetches for the estate only under a lease
  on the source's key: an owner value only it knows, with an expiry, and a fencing
  number that grows with every lease. The new token is written only while the lease
  is still the writer's and its fence is newer than the stored one, so a replica
  whose lease ran out can never overwrite a newer token. Replicas that find the
  lease taken wait briefly for the holder's token instead of fetching their own.
* **Retire if current, estate-wide.** After a 401 the shared entry is deleted only if
  it still carries the refused token's fence: compare-and-delete in one step, so a
  late 401 never throws away the replacement.
* **Never a failed call.** A store that is down, slow or refusing answers as if it
  were empty within ``operation_timeout_s``; the holder then carries on alone, as
  with the in-memory store. One warning marks the outage, one line the recovery,
  and the store is probed again at most every ``reprobe_interval_s``.
* **Encrypted at rest.** Entries are Fernet tokens under ``INVENTORY_PROXY_TOKEN_KEY``.
  An entry this replica cannot decrypt counts as absent, and is never overwritten by
  it: a replica with the wrong key fetches for itself and leaves the estate's token
  alone.

Nothing here logs a token, the key or the store's URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Protocol

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = structlog.get_logger("proxy.token_store")

TOKEN_KEY_ENV = "INVENTORY_PROXY_TOKEN_KEY"  # noqa: S105 - a variable's name


@dataclass(frozen=True, slots=True)
class SharedToken:
    """A token as the store keeps it: times are on the wall clock, shared by hosts.

    ``issued_at`` is when its request was sent; ``fence`` is the lease it was
    written under, unique per entry, which is how a 401 names what it refused.
    """

    value: str = field(repr=False)
    token_type: str
    issued_at: float
    expires_at: float
    fence: int


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to fetch for the estate: ``owner`` is known to this replica only."""

    owner: str = field(repr=False)
    fence: int


class SharedSlot(Protocol):
    """One token source's entry in the shared store.

    No method raises because of the store: an unavailable store reads as empty and
    grants no lease, and the holder then fetches for itself.
    """

    async def read(self) -> SharedToken | None:
        """The stored token, or None when absent, undecryptable or unreachable."""
        ...

    async def claim(
        self, usable: Callable[[SharedToken], bool]
    ) -> SharedToken | Lease | None:
        """A usable token a peer stored, else a lease to fetch under, else None.

        Waits up to ``wait_for_peer_s`` while a peer holds the lease. None means
        fetch alone and do not write: the store is down, the entry is unreadable
        here, or the peer did not deliver in time.
        """
        ...

    async def publish(self, lease: Lease, token: SharedToken) -> bool:
        """Write ``token`` if ``lease`` still holds, release it and tell waiters."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` back without a token, after a failed request."""
        ...

    async def discard(self, fence: int) -> None:
        """Delete the entry if it is still the one written under ``fence``."""
        ...


class TokenKeyError(ValueError):
    """``INVENTORY_PROXY_TOKEN_KEY`` is missing or not a Fernet key."""


class TokenCipher:
    """Encrypts entries with the first key and decrypts with any, for rotation."""

    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, slot: str, token: SharedToken) -> bytes:
        payload = {"slot": slot, **asdict(token)}
        return self._fernet.encrypt(json.dumps(payload).encode())

    def open(self, slot: str, fence: int, blob: bytes) -> SharedToken | None:
        """The entry, or None when this key cannot read it or it was moved.

        The slot and fence inside the ciphertext must match the ones outside, so a
        writer to Redis cannot replay one source's entry under another's key.
        """
        try:
            payload = json.loads(self._fernet.decrypt(blob))
        except (InvalidToken, ValueError):
            return None
        if not isinstance(payload, dict) or payload.get("slot") != slot:
            return None
        try:
            token = SharedToken(
                str(payload["value"]),
                str(payload["token_type"]),
                float(payload["issued_at"]),
                float(payload["expires_at"]),
                int(payload["fence"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return token if token.fence == fence else None


def token_cipher_from_env(environ: Mapping[str, str]) -> TokenCipher:
    """The cipher for ``INVENTORY_PROXY_TOKEN_KEY``: one Fernet key, or several
    separated by commas while a new key rolls out (the first one encrypts)."""
    raw = environ.get(TOKEN_KEY_ENV, "").strip()
    if not raw:
        raise TokenKeyError(
            "it is not set; make a key with python -c 'from cryptography.fernet "
            "import Fernet; print(Fernet.generate_key().decode())'"
        )
    keys = [key.strip().encode() for key in raw.split(",") if key.strip()]
    try:
        return TokenCipher(keys)
    except ValueError:
        raise TokenKeyError(
            "it must be a Fernet key (32 random bytes, base64url), or several "
            "separated by commas"
        ) from None


class StoreHealth:
    """Whether the shared store answers, with one log line per change of state.

    While the store is down, nothing is sent to it until ``reprobe_interval_s``
    has passed; then the next operation is the probe.
    """

    def __init__(
        self,
        target: str,
        reprobe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._reprobe_interval_s = reprobe_interval_s
        self._clock = clock
        self._down_since: float | None = None
        self._probe_at = 0.0

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def may_try(self) -> bool:
        """Whether to send an operation now: the store is up, or a probe is due."""
        return self._down_since is None or self._clock() >= self._probe_at

    def failed(self, reason: str) -> None:
        now = self._clock()
        self._probe_at = now + self._reprobe_interval_s
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "token_store.unavailable",
                store=self.target,
                reason=reason,
                reprobe_in_s=self._reprobe_interval_s,
                hint="each replica fetches its own tokens until the store is back",
            )

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        down_s = self._clock() - self._down_since
        self._down_since = None
        log.info("token_store.recovered", store=self.target, down_s=round(down_s, 1))
