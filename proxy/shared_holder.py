"""A token holder that shares its token with the other replicas of an estate.

``SharedTokenHolder`` keeps every promise of ``TokenHolder`` inside its process
(single flight, refresh ahead, back-off, budget) and adds a ``SharedSlot``
(``proxy.token_store``), consulted on the refresh path only, under the holder's lock:

* before asking the identity provider, it takes the token a peer stored, unless
  that is the token being replaced or one an upstream refused;
* it asks only under the slot's lease and writes the answer back under it; while a
  peer holds the lease it waits (bounded) for that peer's token instead;
* a 401 deletes the stored entry only if it still carries the refused token's fence.

Stored times are on the wall clock, which replicas on different hosts share; a
holder moves them onto its own monotonic clock when it adopts a token, so expiry and
refresh-ahead run as for a token it fetched itself. The fast path of ``token()`` is
``TokenHolder``'s and never touches the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from proxy.holders import HolderObserver
from proxy.metrics import Metrics
from proxy.token_store import Lease, SharedSlot, SharedToken
from proxy.tokens import AccessToken, TokenGrant, TokenHolder, TokenSource

log = structlog.get_logger("proxy.tokens")


class SharedTokenHolder(TokenHolder):
    """A ``TokenHolder`` whose token is shared through ``slot``.

    ``options`` are ``TokenHolder``'s. ``on_adopted`` is told the source and the
    wall-clock expiry of each token taken from a peer, for the metrics that
    otherwise follow this replica's own token requests only.
    """

    def __init__(
        self,
        name: str,
        source: TokenSource,
        *,
        slot: SharedSlot,
        on_adopted: Callable[[str, float], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, source, **options)
        self._slot = slot
        self._on_adopted = on_adopted
        self._retired: AccessToken | None = None
        self._to_discard: AccessToken | None = None

    def retire(self, token: AccessToken) -> bool:
        retiring = token is self._current and token is not self._refused
        replay = super().retire(token)
        if retiring:
            self._retired = token
            if token.fence is not None:
                self._to_discard = token
        return replay

    async def _peer_token(self, stale: AccessToken | None) -> AccessToken | None:
        refused, self._to_discard = self._to_discard, None
        if refused is not None and refused.fence is not None:
            await self._slot.discard(refused.fence)
        entry = await self._slot.read()
        if entry is None or not self._usable(entry, stale):
            return None
        return self._adopt(entry)

    async def _claim(self, stale: AccessToken | None) -> AccessToken | Lease | None:
        claimed = await self._slot.claim(lambda entry: self._usable(entry, stale))
        if isinstance(claimed, SharedToken):
            return self._adopt(claimed)
        return claimed

    async def _share(self, token: AccessToken, grant: TokenGrant, lease: Lease) -> None:
        now = self._clock()
        wall_now = self._wall_clock()
        entry = SharedToken(
            token.value,
            token.token_type,
            issued_at=wall_now - (now - grant.requested_at),
            expires_at=wall_now + (token.expires_at - now),
            fence=lease.fence,
        )
        await self._slot.publish(lease, entry)

    async def _give_back(self, lease: Lease) -> None:
        await self._slot.release(lease)

    def _usable(self, entry: SharedToken, stale: AccessToken | None) -> bool:
        """A stored token serves unless it is being replaced, refused or expired."""
        for replaced in (stale, self._retired):
            if replaced is not None and replaced.value == entry.value:
                return False
        return entry.expires_at > self._wall_clock()

    def _adopt(self, entry: SharedToken) -> AccessToken:
        now = self._clock()
        requested_at = now - (self._wall_clock() - entry.issued_at)
        lifetime_s = entry.expires_at - entry.issued_at
        token = AccessToken(
            entry.value,
            entry.token_type,
            expires_at=requested_at + lifetime_s,
            refresh_at=self._refresh_point(requested_at, lifetime_s),
            fence=entry.fence,
        )
        self._current = token
        self._ever_held = True
        self._last_refreshed_at = entry.issued_at
        if self._on_adopted is not None:
            self._on_adopted(self.name, entry.expires_at)
        log.info(
            "token.adopted",
            source=self.name,
            expires_in_s=round(token.expires_at - now, 3),
            fence=entry.fence,
        )
        return token


def expiry_reporter(
    observer: HolderObserver | None,
) -> Callable[[str, float], None] | None:
    """Where to report a token taken from a peer: the metrics' expiry gauge, which
    otherwise moves only with this replica's own token requests."""
    if not isinstance(observer, Metrics):
        return None
    gauge = observer.token_expiry
    return lambda source, expires_at: gauge.labels(source).set(expires_at)
