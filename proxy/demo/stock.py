"""In-memory supply behind the demo inventory and promising services.

Quantities are a pure function of item and ship node (SHA-256 draws), so two runs, two
processes and a test's expectations agree without fixtures. Distribution centers always
hold deep stock and may have inbound supply; stores (nodes named `STORE...`) hold a few
units and are often out. Reservations are the only state: each takes on-hand units away
until its time to expire has passed, so availability drops after a reservation and comes
back later, as in the vendor's service. Ship dates are relative to a clock the caller
may inject.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

__all__ = [
    "DEFAULT_DISTRIBUTION_GROUPS",
    "NO_SUPPLY_TS",
    "InventoryStock",
    "Supply",
    "format_vendor_ts",
]

NO_SUPPLY_TS = "2500-01-01T00:00:00.000+0000"
"""The vendor's sentinel date for "no supply of this kind"."""

DEFAULT_DISTRIBUTION_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"DG_ONLINE": ("DC1", "DC2", "STORE7"), "DG_STORES": ("STORE7", "STORE9")}
)

_PROCESSING = timedelta(hours=2)


def format_vendor_ts(moment: datetime | None) -> str:
    """Format a moment as the vendor does, `2026-12-04T10:00:00.000+0000`, in UTC.

    None stands for "never" and becomes `NO_SUPPLY_TS`.
    """
    if moment is None:
        return NO_SUPPLY_TS
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}+0000"


@dataclass(frozen=True)
class Supply:
    """Available units of one item at one node or across a distribution group.

    A ship time is None when there is no supply of that kind.
    """

    onhand_quantity: int
    future_quantity: int
    onhand_ship_at: datetime | None
    future_ship_at: datetime | None

    @property
    def total_quantity(self) -> int:
        """On-hand and future units together."""
        return self.onhand_quantity + self.future_quantity

    @property
    def earliest_ship_at(self) -> datetime | None:
        """When the first available unit can ship."""
        return _earliest(self.onhand_ship_at, self.future_ship_at)

    @property
    def latest_ship_at(self) -> datetime | None:
        """When the last available unit can ship."""
        moments = [m for m in (self.onhand_ship_at, self.future_ship_at) if m]
        return max(moments, default=None)

    @classmethod
    def combine(cls, parts: Iterable[Supply]) -> Supply:
        """Add up the supply of several nodes, keeping the earliest ship times."""
        parts = list(parts)
        return cls(
            onhand_quantity=sum(p.onhand_quantity for p in parts),
            future_quantity=sum(p.future_quantity for p in parts),
            onhand_ship_at=_earliest(*(p.onhand_ship_at for p in parts)),
            future_ship_at=_earliest(*(p.future_ship_at for p in parts)),
        )


@dataclass
class _Reservation:
    item_id: str
    ship_node: str
    quantity: int
    expires_at: float


class InventoryStock:
    """Deterministic supply per item and node, reduced by live reservations.

    `distribution_groups` maps each distribution group id to its ship nodes. `now`
    gives the wall-clock time ship dates are computed from; `monotonic` times the
    expiry of reservations.
    """

    def __init__(
        self,
        distribution_groups: Mapping[str, Sequence[str]] = DEFAULT_DISTRIBUTION_GROUPS,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.distribution_groups = {
            group: tuple(nodes) for group, nodes in distribution_groups.items()
        }
        self._now = now
        self._monotonic = monotonic
        self._reservations: list[_Reservation] = []

    def nodes_of(self, distribution_group_id: str) -> tuple[str, ...] | None:
        """The ship nodes of a distribution group, or None if it is not defined."""
        return self.distribution_groups.get(distribution_group_id)

    def node_supply(self, item_id: str, ship_node: str) -> Supply:
        """What one node can ship of an item now, net of live reservations."""
        now = self._now()
        base_onhand, future, future_days = _base_supply(item_id, ship_node)
        onhand = max(0, base_onhand - self._reserved(item_id, ship_node))

        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Supply(
            onhand_quantity=onhand,
            future_quantity=future,
            onhand_ship_at=_next_hour(now) + _PROCESSING if onhand else None,
            future_ship_at=midnight + timedelta(days=future_days) if future else None,
        )

    def network_supply(self, item_id: str, distribution_group_id: str) -> Supply:
        """What a distribution group can ship of an item, summed over its nodes.

        Raises KeyError for a distribution group that is not defined.
        """
        nodes = self.distribution_groups[distribution_group_id]
        return Supply.combine(self.node_supply(item_id, node) for node in nodes)

    def reserve(
        self, item_id: str, ship_node: str, quantity: int, *, time_to_expire_s: float
    ) -> int:
        """Hold up to `quantity` on-hand units for `time_to_expire_s` seconds.

        Returns the units actually held: never more than the node has on hand.
        """
        available = self.node_supply(item_id, ship_node).onhand_quantity
        held = min(quantity, available)
        if held > 0:
            expires_at = self._monotonic() + time_to_expire_s
            self._reservations.append(
                _Reservation(item_id, ship_node, held, expires_at)
            )
        return held

    def _reserved(self, item_id: str, ship_node: str) -> int:
        now = self._monotonic()
        self._reservations = [r for r in self._reservations if r.expires_at > now]
        return sum(
            r.quantity
            for r in self._reservations
            if r.item_id == item_id and r.ship_node == ship_node
        )


def _base_supply(item_id: str, ship_node: str) -> tuple[int, int, int]:
    """On-hand units, inbound units and days until the inbound supply ships."""
    if ship_node.upper().startswith("STORE"):
        # A quarter of store shelves are empty; the rest hold 1 to 12 units.
        shelf = _draw("store", item_id, ship_node, 16)
        return (0 if shelf < 4 else shelf - 3), 0, 0

    # Distribution centers hold 20 to 99 units; one item in three is also inbound.
    onhand = 20 + _draw("dc", item_id, ship_node, 80)
    if _draw("inbound", item_id, ship_node, 3) != 0:
        return onhand, 0, 0
    inbound = 10 + _draw("inbound-units", item_id, ship_node, 50)
    return onhand, inbound, 3 + _draw("inbound-days", item_id, ship_node, 18)


def _draw(purpose: str, item_id: str, ship_node: str, modulo: int) -> int:
    text = f"{purpose}\x00{item_id}\x00{ship_node}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulo


def _next_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _earliest(*moments: datetime | None) -> datetime | None:
    return min((m for m in moments if m is not None), default=None)
