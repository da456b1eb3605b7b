"""The aiohttp application: the call boundary, own endpoints and resource lifetimes.

``create_app`` wires the route table, one token holder per token source and the
forwarder, and owns their lifetime through ``cleanup_ctx``: client sessions open at
start-up and close on shutdown, background refreshes are cancelled. Every call,
proxied or not, passes one middleware that assigns the request id, turns errors into
the shared JSON answer and writes the one ``request.completed`` line.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from proxy.access import AccessPolicy
from proxy.admin import add_admin_routes
from proxy.config import ProxyConfig, UpstreamConfig
from proxy.errors import (
    Forbidden,
    ProxyError,
    RateLimited,
    Unauthenticated,
    error_response,
    proxy_error_response,
)
from proxy.forwarding import CallRecord, Forwarder
from proxy.holders import CredentialHolder, HolderObserver
from proxy.inbound_jwt import JwtVerifier
from proxy.keys import (
    CALL,
    CALLER,
    CONFIG,
    FORWARDER,
    HOLDERS,
    METRICS,
    POLICY,
    REQUEST_ID,
    ROUTES,
)
from proxy.metrics import Metrics
from proxy.observability import (
    MALFORMED_REQUEST_LOGGER,
    bind_request_id,
    flush_logs,
    log_call_completed,
    request_id_from,
)
from proxy.pacing import Backoff
from proxy.redis_store import RedisTokenStore, open_token_store
from proxy.request_hygiene import (
    SERVER_LIMITS,
    check_message_framing,
    check_request_target,
)
from proxy.routing import RouteTable
from proxy.shared_holder import SharedTokenHolder, expiry_reporter
from proxy.source_config import OAuth2SourceConfig, StaticSourceConfig
from proxy.static_credential import StaticCredential
from proxy.token_sources import ClientCredentialsSource
from proxy.tokens import TokenHolder

log = structlog.get_logger("proxy.app")


READY_WAIT_S = 2.0
_PROBES = frozenset({"/healthz", "/readyz"})
_CODES_BY_STATUS = {
    400: "bad_request",
    404: "no_route",
    405: "method_not_allowed",
    413: "body_too_large",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: ProxyConfig) -> web.Application:
    """The proxy for ``config``; logging must already be configured."""
    app = web.Application(
        middlewares=[call_boundary],
        # Bounded request lines and headers; bodies pass through undecoded so that
        # a gzip-encoded request reaches the upstream as the bytes it was labelled.
        handler_args={
            **SERVER_LIMITS,
            "auto_decompress": False,
            "logger": MALFORMED_REQUEST_LOGGER,
        },
    )
    app[CONFIG] = config
    app[ROUTES] = RouteTable(config.upstreams)
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_clients_and_holders)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_admin_routes(app)
    app.router.add_route("*", "/{tail:.*}", proxy_call)
    return app


@web.middleware
async def call_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, the JSON error answer and the ``request.completed`` line."""
    started = time.perf_counter()
    request_id = request_id_from(request.headers.get("X-Request-ID"))
    request[REQUEST_ID] = request_id
    record = request[CALL] = CallRecord()

    # Every log line of this call carries its id; the previous call's is dropped.
    bind_request_id(request_id)
    metrics = request.app[METRICS]
    metrics.in_flight.inc()
    try:
        check_request_target(request.method, request.raw_path)
        check_message_framing(request.version, request.headers)
        if request.path not in _PROBES:
            await _admit(request)
        response = await handler(request)
    except ProxyError as error:
        if isinstance(error, Unauthenticated | Forbidden | RateLimited):
            _log_denial(request, error)
        response = proxy_error_response(error, request_id)
    except web.HTTPException as exc:
        code = _CODES_BY_STATUS.get(exc.status, HTTPStatus(exc.status).phrase)
        response = error_response(exc.status, code, exc.reason, request_id)
    except Exception:
        log.exception("request.failed", method=request.method)
        response = error_response(
            500, "internal_error", "the proxy failed on this call", request_id
        )
    finally:
        metrics.in_flight.dec()
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    duration_s = time.perf_counter() - started

    if request.path not in _PROBES or response.status >= 400:
        metrics.call_answered(
            record.upstream, request.method, response.status, duration_s
        )
        log_call_completed(
            request_id,
            upstream=record.upstream,
            client=record.client,
            method=request.method,
            path=request.raw_path.partition("?")[0],
            status=response.status,
            duration_s=duration_s,
            replayed=record.replayed,
            sharing=record.sharing,
        )
    return response


async def _admit(request: web.Request) -> None:
    """Authenticate the caller; authorization waits until the route is known."""
    policy = request.app[POLICY]
    address = policy.client_address(request)
    request[CALL].client = str(address) if address is not None else None
    caller = await policy.authenticate(request, address)
    request[CALLER] = caller
    if caller.kind != "network":
        request[CALL].client = caller.name


def _log_denial(request: web.Request, error: ProxyError) -> None:
    record = request[CALL]
    log.warning(
        "access.denied",
        client=record.client,
        upstream=record.upstream,
        method=request.method,
        status=error.status,
        reason=error.detail,
    )


async def proxy_call(request: web.Request) -> web.StreamResponse:
    raw_path, _, raw_query = request.raw_path.partition("?")
    match = request.app[ROUTES].match(raw_path, raw_query)
    request[CALL].upstream = match.route.name
    request.app[POLICY].authorize(request[CALLER], match.route.name, request.method)
    if match.route.stand_in.matches(match.remainder):
        return match.route.stand_in.answer(request)
    return await request.app[FORWARDER].forward(
        request, match, request[REQUEST_ID], request[CALL]
    )


async def healthz(_request: web.Request) -> web.Response:
    """The process is up and serving; says nothing about tokens."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when every token source holds a valid token or gets one shortly."""
    holders = request.app[HOLDERS]
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
            503, "not_ready", f"no valid token for {reasons}", request[REQUEST_ID]
        )
    return web.json_response({"status": "ready", "token_sources": sorted(holders)})


async def _clients_and_holders(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = open_token_store(config.token_store)
    upstream_session = _client_session()
    token_session = _client_session()
    holders = build_holders(config, token_session, app[METRICS], store)
    app[HOLDERS] = holders
    app[FORWARDER] = Forwarder(
        upstream_session,
        holders,
        max_body_bytes=config.server.max_body_bytes,
        tls={name: upstream_tls(up) for name, up in config.upstreams.items()},
        trusted_proxies=config.server.trusted_proxies,
        metrics=app[METRICS],
    )
    app[FORWARDER].prepare(config.upstreams)
    jwt = config.inbound.jwt
    verifier = JwtVerifier(jwt, token_session) if jwt is not None else None
    app[POLICY] = AccessPolicy(config, verifier)
    _warn_about_unverified_tls(config)
    for holder in holders.values():
        holder.refresh_soon()
    log.info(
        "proxy.started",
        upstreams={
            name: f"{upstream.path_prefix} -> {upstream.base_url}"
            for name, upstream in config.upstreams.items()
        },
        token_sources=sorted(holders),
    )

    yield

    for holder in set(holders.values()):
        await holder.close()
    if store is not None:
        await store.close()
    await upstream_session.close()
    await token_session.close()
    log.info("proxy.stopped")
    flush_logs()


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


def upstream_tls(upstream: UpstreamConfig) -> ssl.SSLContext | bool:
    """How calls to ``upstream`` verify its certificate: the default store, a
    private CA, or (only when configured so, with a warning) not at all."""
    if not upstream.tls_verify:
        return False
    if upstream.ca_file is not None:
        return ssl.create_default_context(cafile=str(upstream.ca_file))
    return True


def _warn_about_unverified_tls(config: ProxyConfig) -> None:
    for name, upstream in config.upstreams.items():
        if not upstream.tls_verify:
            log.warning("tls.verification_disabled", upstream=name)
    for name, source in config.token_sources.items():
        if isinstance(source, OAuth2SourceConfig) and not source.tls_verify:
            log.warning("tls.verification_disabled", token_source=name)


def _client_session() -> aiohttp.ClientSession:
    """A pooled client that adds nothing the caller did not send.

    No cookie jar (one caller's cookies must never reach another's call), no
    decompression (bodies pass through untouched) and no automatic Accept-Encoding
    or User-Agent, so the upstream sees the OMS's own headers.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        trust_env=False,
    )
