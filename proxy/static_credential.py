"""A fixed credential, such as an API key, behind the same interface as a token.

Some upstreams of an estate take an API key instead of an OAuth2 token; serving
them through the same holder interface lets one proxy front them all. There is
nothing to refresh: a refusal passes straight back to the caller, and a key kept in
a file is re-read when the file changes, so rotation needs no restart.
"""

from __future__ import annotations

import math

from proxy.holders import HolderStatus
from proxy.secret_files import SecretFileError, WatchedFile
from proxy.source_config import StaticSourceConfig
from proxy.tokens import AccessToken


class StaticCredential:
    """Hands out one configured value as a never-expiring token."""

    def __init__(self, name: str, config: StaticSourceConfig) -> None:
        self.name = name
        self._file = WatchedFile(config.value_file, str) if config.value_file else None
        value = self._file.read() if self._file else ""
        if config.value is not None:
            value = config.value.get_secret_value()
        self._token = AccessToken(value, "Bearer", math.inf, math.inf)
        self._last_error: str | None = None

    async def token(self) -> AccessToken:
        if self._file is None:
            return self._token
        try:
            value = self._file.read()
            self._last_error = None
        except SecretFileError as exc:
            # The last good value keeps serving while the file is being replaced.
            self._last_error = str(exc)
            return self._token
        if value != self._token.value:
            self._token = AccessToken(value, "Bearer", math.inf, math.inf)
        return self._token

    def retire(self, token: AccessToken) -> bool:
        return False

    def refused_when_fresh(
        self, token: AccessToken, www_authenticate: str | None
    ) -> None:
        """Never called: a static credential is never replayed."""

    def refresh_soon(self) -> None:
        """Nothing to refresh."""

    async def refresh_now(self) -> None:
        """Re-read the value file, if there is one; nothing else to refresh."""
        await self.token()

    async def wait_for_token(self, timeout_s: float) -> bool:
        return bool((await self.token()).value)

    def status(self) -> HolderStatus:
        return HolderStatus(
            source=self.name,
            has_valid_token=bool(self._token.value),
            expires_in_s=None,
            consecutive_failures=0,
            last_error=self._last_error,
            retry_in_s=None,
        )

    async def close(self) -> None:
        """Nothing to stop."""
