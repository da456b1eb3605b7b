"""One worker's proxy: its resources, and the one handler every call passes.

``Proxy.open`` opens the client sessions and builds one token holder per token
source, the forwarder and the access policy; ``close`` releases them. ``handle`` is
an aiohttp low-level request handler (``web.Server``). Every call gets its request
id, passes the target and framing checks and admission, reaches an upstream or one
of the proxy's own endpoints, and leaves one ``request.completed`` line and its
metrics; any error becomes the shared JSON answer.

The proxy dispatches by itself instead of through ``web.Application``'s router and
middleware chain: all paths but five belong to the upstreams, and the route table
finds the upstream anyway, so the router would be work paid on every call for
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web

from proxy import admin
from proxy.access import AccessPolicy, Caller
from proxy.config import ProxyConfig
from proxy.errors import (
    Forbidden,
    MethodNotAllowed,
    ProxyError,
    RateLimited,
    Unauthenticated,
    error_response,
    proxy_error_response,
)
from proxy.forwarding import Forwarder
from proxy.holders import CredentialHolder, HolderObserver
from proxy.http_client import pooled_session
from proxy.inbound_jwt import JwtVerifier
from proxy.metrics import Metrics
from proxy.observability import (
    CallRecord,
    bind_request_id,
    flush_logs,
    log_call_completed,
    request_id_from,
)
from proxy.pacing import Backoff
from proxy.redis_store import RedisTokenStore, open_token_store
from proxy.request_hygiene import check_message_framing, check_request_target
from proxy.routing import RouteTable
from proxy.shared_holder import SharedTokenHolder, expiry_reporter
from proxy.source_config import OAuth2SourceConfig, StaticSourceConfig
from proxy.static_credential import StaticCredential
from proxy.token_sources import ClientCredentialsSource
from proxy.tokens import TokenHolder

log = structlog.get_logger("proxy.app")

READY_WAIT_S = 2.0
_READ_METHODS = frozenset({"GET", "HEAD"})


OwnEndpoint = Callable[
    ["Proxy", web.BaseRequest, CallRecord, Caller | None], Awaitable[web.Response]
]


class Proxy:
    """The handler of one worker, and everything it holds open.

    Build it with ``Proxy.open`` inside the event loop that will serve it.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        token_session: aiohttp.ClientSession,
        store: RedisTokenStore | None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.routes = RouteTable(config.upstreams)
        self.holders = build_holders(config, token_session, self.metrics, store)
        self.forwarder = Forwarder(
            config.upstreams,
            self.holders,
            max_body_bytes=config.server.max_body_bytes,
            trusted_proxies=config.server.trusted_proxies,
            metrics=self.metrics,
        )
        jwt = config.inbound.jwt
        verifier = JwtVerifier(jwt, token_session) if jwt is not None else None
        self.policy = AccessPolicy(config, verifier)
        self._token_session = token_session
        self._store = store

    @classmethod
    async def open(cls, config: ProxyConfig) -> Proxy:
        """Open sessions and the token store, and start fetching every token.

        Logging must already be configured. Call from the event loop that serves.
        """
        proxy = cls(
            config,
            token_session=pooled_session(),
            store=open_token_store(config.token_store),
        )
        _warn_about_unverified_tls(config)
        for holder in proxy.holders.values():
            holder.refresh_soon()
        log.info(
            "proxy.started",
            upstreams={
                name: f"{upstream.path_prefix} -> {upstream.base_url}"
                for name, upstream in config.upstreams.items()
            },
            token_sources=sorted(proxy.holders),
        )
        return proxy

    async def close(self) -> None:
        """Stop background refreshes and close every connection."""
        for holder in set(self.holders.values()):
            await holder.close()
        if self._store is not None:
            await self._store.close()
        await self.forwarder.close()
        await self._token_session.close()
        log.info("proxy.stopped")
        flush_logs()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one call; never raises."""
        started = time.perf_counter()
        record = CallRecord(request_id_from(request.headers.get("X-Request-ID")))
        # Every log line of this call carries its id; the previous call's is dropped.
        bind_request_id(record.request_id)
        raw_path, _, raw_query = request.raw_path.partition("?")
        own = _OWN_ENDPOINTS.get(raw_path)
        per_call = self.metrics.per_call
        per_call.started()
        try:
            response = await self._dispatch(request, record, raw_path, raw_query, own)
        except ProxyError as error:
            if isinstance(error, Unauthenticated | Forbidden | RateLimited):
                _log_denial(request, record, error)
            response = proxy_error_response(error, record.request_id)
        except Exception:
            log.exception("request.failed", method=request.method)
            response = error_response(
                500,
                "internal_error",
                "the proxy failed on this call",
                record.request_id,
            )
        finally:
            per_call.finished()
        if not response.prepared:
            response.headers["X-Request-ID"] = record.request_id

        if own is None or not own.probe or response.status >= 400:
            duration_s = time.perf_counter() - started
            method, status = request.method, response.status
            per_call.answered(record.upstream, method, status, duration_s)
            log_call_completed(record, method, raw_path, status, duration_s)
        return response

    async def _dispatch(
        self,
        request: web.BaseRequest,
        record: CallRecord,
        raw_path: str,
        raw_query: str,
        own: _OwnEndpoint | None,
    ) -> web.StreamResponse:
        method = request.method
        check_message_framing(request.version, request.headers)
        if own is not None:
            caller = None if own.probe else await self._admit(request, record)
            if method not in _READ_METHODS:
                raise MethodNotAllowed(f"{raw_path} takes GET", allow="GET, HEAD")
            return await own.handler(self, request, record, caller)

        check_request_target(method, request.raw_path)
        caller = await self._admit(request, record)
        source = admin.refreshed_source(raw_path)
        if source is not None:
            if method != "POST":
                raise MethodNotAllowed(f"{raw_path} takes POST", allow="POST")
            return await admin.refresh(self.holders, source, request, caller)

        match = self.routes.find(raw_path, raw_query)
        record.upstream = match.route.name
        self.policy.authorize(caller, match.route.name, method)
        if match.route.stand_in.matches(match.remainder):
            return match.route.stand_in.answer(request)
        return await self.forwarder.forward(request, match, record)

    async def _admit(self, request: web.BaseRequest, record: CallRecord) -> Caller:
        """Authenticate the caller; authorization waits until the route is known."""
        peer = self.policy.peer(request)
        record.client = peer.shown
        if peer.trusted:
            return self.policy.network_caller
        caller = await self.policy.authenticate(request, peer)
        record.client = caller.name
        return caller

    async def healthz(
        self, _request: web.BaseRequest, _record: CallRecord, _caller: Caller | None
    ) -> web.Response:
        """The process is up and serving; says nothing about tokens."""
        return web.json_response({"status": "ok"})

    async def readyz(
        self, _request: web.BaseRequest, record: CallRecord, _caller: Caller | None
    ) -> web.Response:
        """Ready when every token source holds a valid token or gets one shortly."""
        holders = self.holders
        ready = await asyncio.gather(
            *(holder.wait_for_token(READY_WAIT_S) for holder in holders.values())
        )
        failing = [
            holder.status()
            for holder, ok in zip(holders.values(), ready, strict=True)
            if not ok
        ]
        if failing:
            reasons = "; ".join(
                f"{status.source}: {status.last_error or 'no token yet'}"
                for status in failing
            )
            return error_response(
                503, "not_ready", f"no valid token for {reasons}", record.request_id
            )
        return web.json_response({"status": "ready", "token_sources": sorted(holders)})

    async def metrics_page(
        self, request: web.BaseRequest, _record: CallRecord, caller: Caller | None
    ) -> web.Response:
        """Prometheus text exposition, every worker's counts included."""
        return admin.metrics(self.metrics, request, caller)

    async def tokens_page(
        self, request: web.BaseRequest, _record: CallRecord, caller: Caller | None
    ) -> web.Response:
        """Per token source: state, expiry, last refresh, last error; never a token."""
        return admin.tokens(self.holders, request, caller)


@dataclass(frozen=True, slots=True)
class _OwnEndpoint:
    """One of the proxy's own read-only paths, and its handler.

    Probes answer anyone, unauthenticated, and only their failures are logged.
    """

    handler: OwnEndpoint
    probe: bool = False


_OWN_ENDPOINTS: Final[dict[str, _OwnEndpoint]] = {
    "/healthz": _OwnEndpoint(Proxy.healthz, probe=True),
    "/readyz": _OwnEndpoint(Proxy.readyz, probe=True),
    "/metrics": _OwnEndpoint(Proxy.metrics_page),
    "/tokens": _OwnEndpoint(Proxy.tokens_page),
}


def _log_denial(
    request: web.BaseRequest, record: CallRecord, error: ProxyError
) -> None:
    log.warning(
        "access.denied",
        client=record.client,
        upstream=record.upstream,
        method=request.method,
        status=error.status,
        reason=error.detail,
    )


def build_holders(
    config: ProxyConfig,
    session: aiohttp.ClientSession,
    observer: HolderObserver | None = None,
    store: RedisTokenStore | None = None,
) -> dict[str, CredentialHolder]:
    """One holder per token source; sources whose requests are identical share one.

    Sharing is decided by everything that shapes the token request, so two names
    for the same client get one token, and any difference keeps tokens apart. With
    a shared ``store``, the same key names the token's entry there, so replicas
    share a token exactly when their requests would be identical.
    """
    holders: dict[str, CredentialHolder] = {}
    by_request: dict[str, CredentialHolder] = {}
    for name, source in config.token_sources.items():
        if isinstance(source, StaticSourceConfig):
            holders[name] = StaticCredential(name, source)
            continue
        key = source.request_key()
        if key not in by_request:
            fetcher = ClientCredentialsSource(source, session)
            options: dict[str, Any] = {
                "refresh_margin_s": source.refresh_margin_s,
                "default_ttl_s": source.default_ttl_s,
                "backoff": Backoff(source.backoff_initial_s, source.backoff_max_s),
                "max_requests_per_hour": source.max_token_requests_per_hour,
                "cold_start_wait_s": source.cold_start_wait_s,
                "observer": observer,
            }
            by_request[key] = (
                TokenHolder(name, fetcher, **options)
                if store is None
                else SharedTokenHolder(
                    name,
                    fetcher,
                    slot=store.slot(name, key),
                    on_adopted=expiry_reporter(observer),
                    **options,
                )
            )
        holders[name] = by_request[key]
    return holders


def _warn_about_unverified_tls(config: ProxyConfig) -> None:
    for name, upstream in config.upstreams.items():
        if not upstream.tls_verify:
            log.warning("tls.verification_disabled", upstream=name)
    for name, source in config.token_sources.items():
        if isinstance(source, OAuth2SourceConfig) and not source.tls_verify:
            log.warning("tls.verification_disabled", token_source=name)
