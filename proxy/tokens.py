"""Access tokens and the holder that keeps one fresh per token source.

The holder is the reason this project exists. Its promises:

* **Single flight.** Every refresh happens under one ``asyncio.Lock``; callers that
  queue behind it find the new token (or the failure's back-off) when they get in, so
  any number of concurrent calls cause at most one token request in flight.
* **Refresh ahead.** A token is refreshed in the background once it enters its
  refresh window, so no call waits for the identity provider while the current token
  is still valid. Expiry runs on the monotonic clock from the moment the request was
  sent, so a slow answer or a wall-clock jump never stretches a token's life.
* **Invalidate if current.** An upstream's 401 retires only the token that call was
  sent with; a hundred 401s for one token retire it once and share one refresh.
* **Calm failure.** After a failed request the holder backs off with jitter and
  answers ``TokenUnavailable`` at once until the next attempt is due, while a token
  that is still valid keeps being used.

``SharedTokenHolder`` (``proxy.shared_holder``) keeps these promises and shares the
token with other replicas through a store, on the refresh path only: the hooks at
the end of ``TokenHolder`` are where it does so.

Token values never leave this module except through ``AccessToken.value``, which only
the forwarder reads to fill the upstream's Authorization header.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from proxy.errors import TokenUnavailable
from proxy.holders import UNOBSERVED, HolderObserver, HolderStatus
from proxy.jwt_claims import decode_jwt_claims
from proxy.pacing import Backoff, TokenBudget

if TYPE_CHECKING:
    from proxy.token_store import Lease

log = structlog.get_logger("proxy.tokens")


@dataclass(frozen=True, slots=True, eq=False)
class AccessToken:
    """A token and when, on the monotonic clock, to renew it and to stop using it.

    Compared by identity: a holder retires exactly the object a call was sent with.
    ``fence`` names its entry in a shared store, when it was written to or read from
    one.
    """

    value: str = field(repr=False)
    token_type: str
    expires_at: float
    refresh_at: float
    fence: int | None = None

    def is_valid(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a token endpoint answered, before the holder decides its lifetime.

    ``requested_at`` is the monotonic time the request was sent: expiry counts from
    there, never from when the answer arrived.
    """

    value: str = field(repr=False)
    token_type: str
    expires_in_s: float | None
    requested_at: float
    scope: str | None = None


class TokenFetchError(Exception):
    """A token request failed; ``reason`` is safe to log and never holds a secret."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class TokenSource(Protocol):
    """Anything that can obtain a new access token."""

    async def fetch_token(self) -> TokenGrant: ...


class TokenHolder:
    """Keeps one token source's current token; the one place tokens are refreshed."""

    def __init__(
        self,
        name: str,
        source: TokenSource,
        *,
        refresh_margin_s: float,
        default_ttl_s: float,
        backoff: Backoff,
        max_requests_per_hour: int | None = None,
        cold_start_wait_s: float = 0.0,
        observer: HolderObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._source = source
        self._refresh_margin_s = refresh_margin_s
        self._default_ttl_s = default_ttl_s
        self._backoff = backoff
        self._budget = TokenBudget(max_requests_per_hour, clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._cold_start_until = clock() + cold_start_wait_s
        self._lock = asyncio.Lock()
        self._current: AccessToken | None = None
        self._ever_held = False
        self._refused: AccessToken | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._retry_at = 0.0
        self._budget_logged = False
        self._observer: HolderObserver = observer or UNOBSERVED
        self._last_refreshed_at: float | None = None
        self._background: asyncio.Task[None] | None = None

    async def token(self) -> AccessToken:
        """A valid token, fetched only when none is held.

        Raises ``TokenUnavailable`` when the source is failing and no valid token is
        left; the error's ``retry_after_s`` says when the next attempt is due.
        """
        current = self._current
        now = self._clock()
        if current is not None and current.is_valid(now):
            if now >= current.refresh_at:
                self.refresh_soon()
            return current
        self._observer.waiting_on_refresh(self.name, 1)
        try:
            return await self._refresh(stale=current)
        except TokenUnavailable as error:
            if self._ever_held:
                raise
            return await self._await_first_token(error)
        finally:
            self._observer.waiting_on_refresh(self.name, -1)

    def retire(self, token: AccessToken) -> bool:
        """Stop using ``token`` after an upstream refused it; whether to replay.

        Only the current token is retired; when a newer one exists the refused call
        simply replays with it. A token already refused right after it was issued
        is kept (see ``refused_when_fresh``) and the answer is not to replay.
        """
        if token is self._refused:
            return False
        if self._current is token:
            self._current = None
        return True

    def refused_when_fresh(
        self, token: AccessToken, www_authenticate: str | None
    ) -> None:
        """An upstream refused a token just issued to replace a refused one.

        That is a misconfigured scope or audience, not expiry: refreshing again
        would only loop. It is logged once, and the token is kept until it expires,
        so further refusals pass through without a token request each.
        """
        if token is self._refused:
            return
        self._refused = token
        log.error(
            "token.refused_when_fresh",
            source=self.name,
            www_authenticate=www_authenticate,
            hint="check the token source's scope, audience and the client's grants",
        )

    def refresh_soon(self) -> None:
        """Start a background refresh unless one is running or a back-off forbids it."""
        if self._lock.locked() or self._clock() < self._retry_at:
            return
        if self._background is not None and not self._background.done():
            return
        self._background = asyncio.create_task(
            self._refresh_quietly(self._current), name=f"token-refresh-{self.name}"
        )

    async def refresh_now(self) -> None:
        """Fetch a new token now, sharing a refresh already in flight.

        Back-off and the budget still apply: a failing source raises
        ``TokenUnavailable`` rather than being asked again.
        """
        await self._refresh(stale=self._current)

    async def wait_for_token(self, timeout_s: float) -> bool:
        """Whether a valid token is held or can be had within ``timeout_s``."""
        try:
            await asyncio.wait_for(asyncio.shield(self.token()), timeout_s)
        except (TokenUnavailable, TimeoutError):
            return False
        return True

    def status(self) -> HolderStatus:
        now = self._clock()
        current = self._current
        valid = current is not None and current.is_valid(now)
        return HolderStatus(
            source=self.name,
            has_valid_token=valid,
            expires_in_s=current.expires_at - now if current and valid else None,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            retry_in_s=self._retry_at - now if self._retry_at > now else None,
            requests_last_hour=self._budget.used(),
            expires_at=(
                self._wall_clock() + current.expires_at - now
                if current and valid
                else None
            ),
            last_refreshed_at=self._last_refreshed_at,
        )

    async def close(self) -> None:
        """Cancel a background refresh still running; called on shutdown."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh_quietly(self, stale: AccessToken | None) -> None:
        # A failure is logged as token.refresh_failed; the next call or window retries.
        with contextlib.suppress(TokenUnavailable):
            await self._refresh(stale=stale)

    async def _refresh(self, stale: AccessToken | None) -> AccessToken:
        async with self._lock:
            current = self._current
            now = self._clock()
            if current is not None and current is not stale and current.is_valid(now):
                return current
            if (peer_token := await self._peer_token(stale)) is not None:
                return peer_token
            now = self._clock()

            if now < self._retry_at:
                if current is not None and current.is_valid(now):
                    return current
                raise self._unavailable(now)

            if (budget_wait_s := self._budget.wait_s()) > 0:
                return self._over_budget(current, now, budget_wait_s)

            claim = await self._claim(stale)
            if isinstance(claim, AccessToken):
                return claim
            self._budget.spend()
            self._budget_logged = False
            return await self._fetch(current, self._clock(), claim)

    def _over_budget(
        self, current: AccessToken | None, now: float, wait_s: float
    ) -> AccessToken:
        if not self._budget_logged:
            self._budget_logged = True
            log.error(
                "token.budget_exhausted",
                source=self.name,
                max_requests_per_hour=self._budget.per_hour,
                retry_in_s=round(wait_s, 1),
            )
        if current is not None and current.is_valid(now):
            return current
        raise TokenUnavailable(
            f"token source {self.name!r} used its budget of "
            f"{self._budget.per_hour} token requests per hour",
            retry_after_s=wait_s,
        )

    async def _await_first_token(self, error: TokenUnavailable) -> AccessToken:
        """At a cold start, wait (bounded) for the next attempt instead of failing."""
        while True:
            now = self._clock()
            next_attempt = now + error.retry_after_s
            if next_attempt >= self._cold_start_until:
                raise error
            await asyncio.sleep(error.retry_after_s)
            try:
                return await self._refresh(stale=None)
            except TokenUnavailable as again:
                error = again

    async def _fetch(
        self, current: AccessToken | None, now: float, lease: Lease | None
    ) -> AccessToken:
        # A fetch cancelled at shutdown leaves its lease, if any, to expire by itself.
        try:
            grant = await self._source.fetch_token()
            token = self._accept(grant, lease)
        except TokenFetchError as exc:
            if lease is not None:
                await self._give_back(lease)
            self._report(ok=False, started=now, lifetime_s=None)
            self._failures += 1
            self._last_error = exc.reason
            delay_s = self._backoff.delay_s(self._failures, exc.retry_after_s)
            failed_at = self._clock()
            self._retry_at = failed_at + delay_s
            still_valid = current is not None and current.is_valid(failed_at)
            log.warning(
                "token.refresh_failed",
                source=self.name,
                reason=exc.reason,
                failures=self._failures,
                retry_in_s=round(delay_s, 3),
                still_valid=still_valid,
            )
            if current is not None and still_valid:
                return current
            raise self._unavailable(failed_at) from None

        self._current = token
        self._ever_held = True
        self._last_refreshed_at = self._wall_clock()
        self._report(ok=True, started=now, lifetime_s=token.expires_at - self._clock())
        self._failures = 0
        self._last_error = None
        self._retry_at = 0.0
        if lease is not None:
            await self._share(token, grant, lease)
        log.info(
            "token.refreshed",
            source=self.name,
            expires_in_s=round(token.expires_at - grant.requested_at, 3),
            fetch_ms=round((self._clock() - now) * 1000, 1),
        )
        return token

    def _report(self, *, ok: bool, started: float, lifetime_s: float | None) -> None:
        budget = self._budget
        self._observer.token_fetched(
            self.name,
            ok=ok,
            duration_s=self._clock() - started,
            expires_at=None if lifetime_s is None else self._wall_clock() + lifetime_s,
            budget_left=budget.remaining(),
        )

    def _accept(self, grant: TokenGrant, lease: Lease | None = None) -> AccessToken:
        lifetime_s = grant.expires_in_s
        if lifetime_s is None:
            lifetime_s = self._jwt_lifetime_s(grant.value)
        if lifetime_s is None:
            lifetime_s = self._default_ttl_s
        if lifetime_s <= 0:
            raise TokenFetchError(
                f"token arrived already expired (lifetime {lifetime_s:.0f}s); "
                "check the provider's clock and expires_in"
            )

        expires_at = grant.requested_at + lifetime_s
        refresh_at = self._refresh_point(grant.requested_at, lifetime_s)
        fence = lease.fence if lease is not None else None
        return AccessToken(grant.value, grant.token_type, expires_at, refresh_at, fence)

    def _refresh_point(self, requested_at: float, lifetime_s: float) -> float:
        # A margin wider than the token's life would refresh on every call: renew no
        # earlier than half-way through, whatever the margin says.
        expires_at = requested_at + lifetime_s
        return max(expires_at - self._refresh_margin_s, requested_at + lifetime_s / 2)

    def _jwt_lifetime_s(self, value: str) -> float | None:
        claims = decode_jwt_claims(value)
        exp = claims.get("exp") if claims else None
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return None
        return float(exp) - self._wall_clock()

    def _unavailable(self, now: float) -> TokenUnavailable:
        reason = self._last_error or "no token yet"
        return TokenUnavailable(
            f"no valid access token for token source {self.name!r}: {reason}",
            retry_after_s=max(0.0, self._retry_at - now),
        )

    # Hooks for sharing the token with other replicas (proxy.shared_holder), all
    # called under the lock on the refresh path. Alone, a holder has no peer whose
    # token it could take, no lease to fetch under and nothing to write back.

    async def _peer_token(self, stale: AccessToken | None) -> AccessToken | None:
        """A token another replica holds, unless it is ``stale``."""
        return None

    async def _claim(self, stale: AccessToken | None) -> AccessToken | Lease | None:
        """A peer's token after all, or the lease to fetch under, or None."""
        return None

    async def _share(self, token: AccessToken, grant: TokenGrant, lease: Lease) -> None:
        """Hand a token fetched under ``lease`` to the other replicas."""

    async def _give_back(self, lease: Lease) -> None:
        """Return ``lease`` after a failed request."""
