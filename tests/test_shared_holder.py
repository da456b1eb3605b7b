"""The shared holder's use of a store slot, on a fake clock with a scripted source.

The slot here is a recording stand-in for the ``SharedSlot`` contract; the Redis
slot itself is tested against a real redis-server in test_redis_store.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxy.errors import TokenUnavailable
from proxy.pacing import Backoff
from proxy.shared_holder import SharedTokenHolder
from proxy.token_store import Lease, SharedToken
from proxy.tokens import TokenFetchError
from tests.test_tokens import FakeClock, ScriptedSource

WALL_START = 1_800_000_000.0


class RecordingSlot:
    """Answers from fields the test sets, and records what the holder asks."""

    def __init__(self) -> None:
        self.entry: SharedToken | None = None
        self.claim_answer: SharedToken | Lease | None = Lease("owner", 7)
        self.calls: list[str] = []
        self.published: list[SharedToken] = []
        self.discarded: list[int] = []

    async def read(self) -> SharedToken | None:
        self.calls.append("read")
        return self.entry

    async def claim(
        self, usable: Callable[[SharedToken], bool]
    ) -> SharedToken | Lease | None:
        self.calls.append("claim")
        return self.claim_answer

    async def publish(self, lease: Lease, token: SharedToken) -> bool:
        self.calls.append("publish")
        self.published.append(token)
        return True

    async def release(self, lease: Lease) -> None:
        self.calls.append("release")

    async def discard(self, fence: int) -> None:
        self.calls.append("discard")
        self.discarded.append(fence)


def make_holder(
    source: ScriptedSource,
    clock: FakeClock,
    slot: RecordingSlot,
    *,
    margin_s: float = 10.0,
    wall_clock: FakeClock | None = None,
) -> SharedTokenHolder:
    return SharedTokenHolder(
        "iv",
        source,
        slot=slot,
        refresh_margin_s=margin_s,
        default_ttl_s=300.0,
        backoff=Backoff(initial_s=1.0, max_s=60.0),
        clock=clock,
        wall_clock=wall_clock or FakeClock(WALL_START),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(WALL_START)


@pytest.fixture
def source(clock: FakeClock) -> ScriptedSource:
    return ScriptedSource(clock)


@pytest.fixture
def slot() -> RecordingSlot:
    return RecordingSlot()


async def test_the_fast_path_never_touches_the_shared_store(
    source: ScriptedSource, clock: FakeClock, slot: RecordingSlot
) -> None:
    """With a valid token in memory, calls cost no store round trip."""
    holder = make_holder(source, clock, slot)
    await holder.token()
    before = list(slot.calls)

    for _ in range(100):
        await holder.token()

    assert before == ["read", "claim", "publish"]
    assert slot.calls == before


async def test_a_token_fetched_under_a_lease_is_shared_on_the_wall_clock(
    source: ScriptedSource, clock: FakeClock, wall: FakeClock, slot: RecordingSlot
) -> None:
    """The written entry carries the lease's fence and the token's wall times."""
    holder = make_holder(source, clock, slot, wall_clock=wall)

    token = await holder.token()

    [entry] = slot.published
    assert (entry.value, entry.fence, token.fence) == ("token-1", 7, 7)
    assert entry.issued_at == wall.now
    assert entry.expires_at == wall.now + 60.0


async def test_a_token_a_peer_stored_is_adopted_without_a_request(
    source: ScriptedSource, clock: FakeClock, wall: FakeClock, slot: RecordingSlot
) -> None:
    """A stored token moves onto this process's clock, refresh point included."""
    slot.entry = SharedToken("peer", "Bearer", wall.now - 20, wall.now + 40, 3)
    holder = make_holder(source, clock, slot, wall_clock=wall, margin_s=10)

    token = await holder.token()

    assert source.calls == 0
    assert (token.value, token.fence) == ("peer", 3)
    assert token.expires_at == clock.now + 40.0
    assert token.refresh_at == clock.now + 30.0


async def test_a_peer_token_found_while_waiting_costs_no_request(
    source: ScriptedSource, clock: FakeClock, wall: FakeClock, slot: RecordingSlot
) -> None:
    """When the claim answers with a peer's token, the holder takes it."""
    slot.claim_answer = SharedToken("peer", "Bearer", wall.now, wall.now + 60, 4)
    holder = make_holder(source, clock, slot, wall_clock=wall)

    token = await holder.token()

    assert source.calls == 0
    assert token.value == "peer"
    assert holder.status().requests_last_hour == 0


async def test_refreshing_ahead_skips_the_stored_copy_of_the_same_token(
    source: ScriptedSource, clock: FakeClock, wall: FakeClock, slot: RecordingSlot
) -> None:
    """In its refresh window, the token being replaced is no answer from the store."""
    holder = make_holder(source, clock, slot, wall_clock=wall, margin_s=10)
    first = await holder.token()
    slot.entry = slot.published[0]
    clock.now += 55.0
    wall.now += 55.0
    slot.calls.clear()

    await holder.refresh_now()
    after = await holder.token()

    assert slot.calls == ["read", "claim", "publish"]
    assert after is not first
    assert after.value == "token-2"


async def test_a_refused_shared_token_is_discarded_by_its_fence(
    source: ScriptedSource, clock: FakeClock, wall: FakeClock, slot: RecordingSlot
) -> None:
    """After a 401 the stored entry goes only if it still has the refused fence."""
    slot.entry = SharedToken("peer", "Bearer", wall.now, wall.now + 60, 3)
    holder = make_holder(source, clock, slot, wall_clock=wall)
    refused = await holder.token()

    holder.retire(refused)
    fresh = await holder.token()

    assert slot.discarded == [3]
    assert fresh.value == "token-1"
    assert source.calls == 1


async def test_without_a_lease_the_holder_fetches_alone_and_writes_nothing(
    source: ScriptedSource, clock: FakeClock, slot: RecordingSlot
) -> None:
    """A store that is down or unreadable here leaves the holder on its own."""
    slot.claim_answer = None
    holder = make_holder(source, clock, slot)

    token = await holder.token()

    assert token.value == "token-1"
    assert token.fence is None
    assert "publish" not in slot.calls


async def test_a_failed_request_under_a_lease_releases_it(
    source: ScriptedSource, clock: FakeClock, slot: RecordingSlot
) -> None:
    """Peers waiting on the lease are told at once when the request fails."""
    source.failure = TokenFetchError("token endpoint answered 500")
    holder = make_holder(source, clock, slot)

    with pytest.raises(TokenUnavailable):
        await holder.token()

    assert slot.calls == ["read", "claim", "release"]
