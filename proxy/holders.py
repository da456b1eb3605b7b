"""What every credential holder offers, and what it reports.

Token holders (``proxy.tokens``) and static credentials (``proxy.static_credential``)
both serve the forwarder through ``CredentialHolder``; health checks and ``/tokens``
read their ``HolderStatus``; metrics listen as a ``HolderObserver``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.tokens import AccessToken


@dataclass(frozen=True, slots=True)
class HolderStatus:
    """A holder's state for health checks and operators; never the token."""

    source: str
    has_valid_token: bool
    expires_in_s: float | None
    consecutive_failures: int
    last_error: str | None
    retry_in_s: float | None
    requests_last_hour: int = 0
    expires_at: float | None = None
    last_refreshed_at: float | None = None


class HolderObserver(Protocol):
    """Where a holder reports its token requests and waiting calls (metrics)."""

    def token_fetched(
        self,
        source: str,
        *,
        ok: bool,
        duration_s: float,
        expires_at: float | None,
        budget_left: int | None,
    ) -> None: ...

    def waiting_on_refresh(self, source: str, change: int) -> None: ...


class _Unobserved:
    """Reports nowhere: for holders outside a running proxy (tests, commands)."""

    def token_fetched(
        self,
        source: str,
        *,
        ok: bool,
        duration_s: float,
        expires_at: float | None,
        budget_left: int | None,
    ) -> None:
        pass

    def waiting_on_refresh(self, source: str, change: int) -> None:
        pass


class CredentialHolder(Protocol):
    """What the forwarder and the health checks need of a token holder."""

    name: str

    async def token(self) -> AccessToken: ...

    def retire(self, token: AccessToken) -> bool: ...

    def refused_when_fresh(
        self, token: AccessToken, www_authenticate: str | None
    ) -> None: ...

    def refresh_soon(self) -> None: ...

    async def refresh_now(self) -> None: ...

    async def wait_for_token(self, timeout_s: float) -> bool: ...

    def status(self) -> HolderStatus: ...

    async def close(self) -> None: ...


UNOBSERVED = _Unobserved()
