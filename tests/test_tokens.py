"""The token holder's promises, on a fake clock with a scripted token source."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from proxy.errors import TokenUnavailable
from proxy.jwt_claims import decode_jwt_claims
from proxy.pacing import Backoff
from proxy.tokens import AccessToken, TokenFetchError, TokenGrant, TokenHolder


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """Answers token requests from a script; ``gate`` holds answers back."""

    def __init__(self, clock: FakeClock, expires_in_s: float | None = 60.0) -> None:
        self.clock = clock
        self.expires_in_s = expires_in_s
        self.calls = 0
        self.failure: TokenFetchError | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.value: str | None = None
        self.fetch_duration_s = 0.0

    async def fetch_token(self) -> TokenGrant:
        self.calls += 1
        requested_at = self.clock()
        await self.gate.wait()
        self.clock.now += self.fetch_duration_s
        if self.failure is not None:
            raise self.failure
        return TokenGrant(
            value=self.value or f"token-{self.calls}",
            token_type="Bearer",
            expires_in_s=self.expires_in_s,
            requested_at=requested_at,
        )


async def settle() -> None:
    """Let background tasks run to their next await; a bounded number of turns."""
    for _ in range(10):
        await asyncio.sleep(0)


def make_holder(
    source: ScriptedSource,
    clock: FakeClock,
    *,
    margin_s: float = 10.0,
    default_ttl_s: float = 300.0,
    wall_clock: FakeClock | None = None,
) -> TokenHolder:
    return TokenHolder(
        "iv",
        source,
        refresh_margin_s=margin_s,
        default_ttl_s=default_ttl_s,
        backoff=Backoff(initial_s=1.0, max_s=60.0),
        clock=clock,
        wall_clock=wall_clock or FakeClock(1_800_000_000.0),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(clock: FakeClock) -> ScriptedSource:
    return ScriptedSource(clock)


async def test_concurrent_cold_start_makes_one_token_request(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """500 calls arriving before any token exists share a single token request."""
    holder = make_holder(source, clock)
    source.gate.clear()

    calls = [asyncio.create_task(holder.token()) for _ in range(500)]
    await asyncio.sleep(0)
    source.gate.set()
    tokens = await asyncio.gather(*calls)

    assert source.calls == 1
    assert {token.value for token in tokens} == {"token-1"}


async def test_token_is_reused_until_its_refresh_window(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """Calls inside a token's quiet period never reach the token endpoint."""
    holder = make_holder(source, clock, margin_s=10.0)
    first = await holder.token()

    clock.now += 49.0
    again = await holder.token()

    assert again is first
    assert source.calls == 1


async def test_refresh_ahead_does_not_make_callers_wait(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """In the refresh window, calls get the current token while one refresh runs."""
    holder = make_holder(source, clock, margin_s=10.0)
    first = await holder.token()
    clock.now += 55.0
    source.gate.clear()

    during = [await holder.token() for _ in range(20)]
    source.gate.set()
    await settle()
    after = await holder.token()

    assert all(token is first for token in during)
    assert after.value == "token-2"
    assert source.calls == 2
    await holder.close()


async def test_expiry_counts_from_when_the_request_was_sent(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """A slow answer does not stretch the token's life past the provider's count."""
    source.fetch_duration_s = 5.0
    start = clock.now
    holder = make_holder(source, clock)

    token = await holder.token()

    assert token.expires_at == start + 60.0


async def test_missing_expires_in_falls_back_to_the_jwt_exp(clock: FakeClock) -> None:
    """Without expires_in, a JWT's exp claim sets the lifetime."""
    wall = FakeClock(1_800_000_000.0)
    source = ScriptedSource(clock, expires_in_s=None)
    source.value = make_jwt({"exp": wall.now + 120, "sub": "oms"})
    holder = make_holder(source, clock, wall_clock=wall)

    token = await holder.token()

    assert token.expires_at == pytest.approx(clock.now + 120.0)


async def test_missing_expires_in_on_opaque_token_uses_default_ttl(
    clock: FakeClock,
) -> None:
    """An opaque token without expires_in lives default_ttl_s."""
    source = ScriptedSource(clock, expires_in_s=None)
    holder = make_holder(source, clock, default_ttl_s=42.0)

    token = await holder.token()

    assert token.expires_at == clock.now + 42.0


async def test_expired_token_is_replaced_on_next_call(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """Once a token expires, the next call waits for a fresh one."""
    holder = make_holder(source, clock)
    await holder.token()

    clock.now += 61.0
    token = await holder.token()

    assert token.value == "token-2"
    assert source.calls == 2


async def test_retiring_an_older_token_keeps_the_newer_one(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """A 401 for a token that was already replaced causes no refresh."""
    holder = make_holder(source, clock)
    old = await holder.token()
    clock.now += 61.0
    new = await holder.token()

    holder.retire(old)
    after = await holder.token()

    assert after is new
    assert source.calls == 2


async def test_hundred_rejections_of_one_token_cause_one_refresh(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """Concurrent 401s for the same token share a single refresh."""
    holder = make_holder(source, clock)
    refused = await holder.token()
    source.gate.clear()

    async def replay() -> AccessToken:
        holder.retire(refused)
        return await holder.token()

    replays = [asyncio.create_task(replay()) for _ in range(100)]
    await asyncio.sleep(0)
    source.gate.set()
    tokens = await asyncio.gather(*replays)

    assert source.calls == 2
    assert {token.value for token in tokens} == {"token-2"}


async def test_failure_backs_off_instead_of_retrying_per_call(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """After a failed request, calls fail at once until the back-off step ends."""
    source.failure = TokenFetchError("token endpoint answered 500")
    holder = make_holder(source, clock)

    failures = []
    for _ in range(100):
        with pytest.raises(TokenUnavailable) as caught:
            await holder.token()
        failures.append(caught.value)

    assert source.calls == 1
    assert 0 < failures[-1].retry_after_s <= 1.0
    assert "token endpoint answered 500" in failures[-1].detail


async def test_next_attempt_is_made_once_the_back_off_ends(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """One attempt per back-off step; success resets the failure count."""
    source.failure = TokenFetchError("token endpoint answered 500")
    holder = make_holder(source, clock)
    with pytest.raises(TokenUnavailable):
        await holder.token()

    clock.now += 1.0
    source.failure = None
    token = await holder.token()

    assert token.value == "token-2"
    assert holder.status().consecutive_failures == 0


async def test_waiters_share_the_failure_of_one_attempt(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """Callers queued behind a failing request get its error, not a request each."""
    source.failure = TokenFetchError("token endpoint unreachable")
    source.gate.clear()
    holder = make_holder(source, clock)

    calls = [asyncio.create_task(holder.token()) for _ in range(50)]
    await asyncio.sleep(0)
    source.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert source.calls == 1
    assert all(isinstance(result, TokenUnavailable) for result in results)


async def test_valid_token_is_kept_while_refreshes_fail(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """A failing provider costs nothing while the current token is still valid."""
    holder = make_holder(source, clock, margin_s=10.0)
    first = await holder.token()
    source.failure = TokenFetchError("token endpoint answered 503")

    clock.now += 55.0
    await holder.token()
    await settle()
    still = await holder.token()

    assert still is first
    assert source.calls == 2
    await holder.close()


async def test_retry_after_from_the_provider_is_honoured(
    source: ScriptedSource, clock: FakeClock
) -> None:
    """A 429's Retry-After sets the back-off and the 503's Retry-After."""
    source.failure = TokenFetchError("token endpoint answered 429", retry_after_s=30)
    holder = make_holder(source, clock)

    with pytest.raises(TokenUnavailable) as caught:
        await holder.token()
    clock.now += 29.0
    with pytest.raises(TokenUnavailable):
        await holder.token()

    assert caught.value.retry_after_s >= 30.0
    assert caught.value.headers()["Retry-After"] == "30"
    assert source.calls == 1


async def test_margin_wider_than_the_lifetime_refreshes_at_half_life(
    clock: FakeClock,
) -> None:
    """A 30 s margin on a 20 s token must not refresh on every call."""
    source = ScriptedSource(clock, expires_in_s=20.0)
    holder = make_holder(source, clock, margin_s=30.0)

    token = await holder.token()

    assert token.refresh_at == clock.now + 10.0


async def test_token_already_expired_on_arrival_is_a_failure(
    clock: FakeClock,
) -> None:
    """expires_in of 0 backs off instead of refetching on every call."""
    source = ScriptedSource(clock, expires_in_s=0.0)
    holder = make_holder(source, clock)

    with pytest.raises(TokenUnavailable):
        await holder.token()
    with pytest.raises(TokenUnavailable):
        await holder.token()

    assert source.calls == 1


def test_token_repr_hides_the_value(clock: FakeClock) -> None:
    """Printing a token, in a log or a traceback, never shows its value."""
    token = AccessToken("s3cr3t-value", "Bearer", expires_at=2.0, refresh_at=1.0)

    assert "s3cr3t-value" not in repr(token)


@pytest.mark.parametrize("failures", [1, 2, 5, 10, 30])
def test_backoff_grows_and_stays_capped(failures: int) -> None:
    """Delays double per failure between half and all of their step, up to max_s."""
    backoff = Backoff(initial_s=1.0, max_s=60.0)
    step = min(60.0, 2.0 ** (failures - 1))

    delays = [backoff.delay_s(failures) for _ in range(50)]

    assert all(step / 2 <= delay <= step for delay in delays)


def test_jwt_claims_are_read_and_non_jwts_ignored() -> None:
    """Only a three-part token with a JSON object payload counts as a JWT."""
    assert decode_jwt_claims(make_jwt({"exp": 5})) == {"exp": 5}
    assert decode_jwt_claims("opaque-token") is None
    assert decode_jwt_claims("a.b.c") is None


def make_jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"
