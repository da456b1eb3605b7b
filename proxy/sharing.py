"""Identical lookups share one upstream call, and optionally a short-lived answer.

An OMS checking availability for a busy cart, or a marketplace polling hot items,
sends the same lookup many times at once. For requests the operator marks as safe
to share (``share_identical = ["POST /*/v1/availability/*"]``), concurrent calls with
the same method, path, query, body digest and representation headers wait on one
upstream call and each receive its answer; with ``cache_ttl_s`` the answer also
serves repeats for that long. Off unless configured, per upstream.

Only answers that allow it are kept: a 200 without ``no-store``, ``private`` or a
``Set-Cookie``, and without a ``Vary`` on headers outside the key. The shared call
runs in a task of its own, so a caller that goes away does not cancel it for the
others.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple

from cachetools import TTLCache
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import UpstreamConfig
from proxy.stand_in import compile_pattern

Outcome = Literal["leader", "joined", "cache_hit"]
KEY_HEADERS = ("Accept", "Accept-Encoding", "Accept-Language", "Content-Type")
_NOT_STORABLE = re.compile(r"(?:^|[,\s])(?:no-store|private)(?:$|[,\s=])", re.I)


class Answer(NamedTuple):
    """An upstream answer held whole, to be given to every caller that shares it.

    Immutable, as it may be handed to many callers; a named tuple rather than a
    frozen dataclass because one is built on every call with a small answer, and
    a frozen dataclass takes twice as long to build.
    """

    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes

    def storable(self) -> bool:
        cache_control = self.headers.get("Cache-Control", "")
        vary = {
            part.strip().lower()
            for part in self.headers.get("Vary", "").split(",")
            if part.strip()
        }
        return (
            self.status == 200
            and not _NOT_STORABLE.search(cache_control)
            and "Set-Cookie" not in self.headers
            and vary <= {name.lower() for name in KEY_HEADERS}
        )


class Sharing:
    """The sharing rules, calls in flight and cached answers of one upstream."""

    def __init__(self, upstream: UpstreamConfig) -> None:
        self._rules = [
            (method, compile_pattern(pattern))
            for method, pattern in (
                rule.split(" ", 1) for rule in upstream.share_identical
            )
        ]
        self._in_flight: dict[str, asyncio.Task[Answer]] = {}
        self._cache: TTLCache[str, Answer] | None = None
        if upstream.cache_ttl_s > 0:
            self._cache = TTLCache(upstream.cache_max_entries, upstream.cache_ttl_s)

    def key(
        self,
        method: str,
        remainder: str,
        raw_query: str,
        body: bytes | None,
        headers: CIMultiDictProxy[str],
    ) -> str | None:
        """The sharing key of a request, or None when it must go on its own."""
        if not any(
            method == rule_method and pattern.fullmatch(remainder)
            for rule_method, pattern in self._rules
        ):
            return None
        digest = hashlib.sha256(body or b"").hexdigest()
        varying = "\x00".join(headers.get(name, "") for name in KEY_HEADERS)
        return f"{method} {remainder}?{raw_query}\x00{digest}\x00{varying}"

    async def answer(
        self, key: str, call: Callable[[], Awaitable[Answer]]
    ) -> tuple[Answer, Outcome]:
        """The answer for ``key``: cached, joined to a call in flight, or fetched."""
        if self._cache is not None and (cached := self._cache.get(key)) is not None:
            return cached, "cache_hit"
        if (task := self._in_flight.get(key)) is not None:
            return await asyncio.shield(task), "joined"

        task = asyncio.ensure_future(call())
        self._in_flight[key] = task
        task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task), "leader"

    def _settle(self, key: str, task: asyncio.Task[Answer]) -> None:
        self._in_flight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        answer = task.result()
        if self._cache is not None and answer.storable():
            self._cache[key] = answer
