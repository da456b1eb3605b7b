"""The operator's endpoints: ``/metrics``, ``/tokens`` and a forced refresh.

They answer callers on the loopback interface, and partners whose grants include
``admin:GET`` (and ``admin:POST`` for a refresh), such as a Prometheus server that
sends an API key. Being in ``trusted_networks`` is not enough: that trusts a caller
with the upstreams, not with the proxy's internals. No token ever appears here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from aiohttp import web

from proxy.access import Caller
from proxy.config import ADMIN
from proxy.errors import Forbidden, NoRoute, TokenUnavailable
from proxy.holders import CredentialHolder, HolderStatus
from proxy.metrics import Metrics
from proxy.observability import parse_address

_REFRESH_PREFIX = "/tokens/"
_REFRESH_SUFFIX = "/refresh"


def metrics(
    registry: Metrics, request: web.BaseRequest, caller: Caller | None
) -> web.Response:
    """Prometheus text exposition, every worker's counts included."""
    _require_admin(request, caller)
    body, content_type = registry.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def tokens(
    holders: Mapping[str, CredentialHolder],
    request: web.BaseRequest,
    caller: Caller | None,
) -> web.Response:
    """Per token source: state, expiry, last refresh, last error; never the token."""
    _require_admin(request, caller)
    return web.json_response(
        {name: _describe(holder.status()) for name, holder in holders.items()}
    )


def refreshed_source(raw_path: str) -> str | None:
    """The source named by ``/tokens/{source}/refresh``, or None for other paths."""
    if not (
        raw_path.startswith(_REFRESH_PREFIX) and raw_path.endswith(_REFRESH_SUFFIX)
    ):
        return None
    source = raw_path[len(_REFRESH_PREFIX) : -len(_REFRESH_SUFFIX)]
    return source if source and "/" not in source else None


async def refresh(
    holders: Mapping[str, CredentialHolder],
    source: str,
    request: web.BaseRequest,
    caller: Caller,
) -> web.Response:
    """Force one refresh of a source (single flight); answers its new status."""
    _require_admin(request, caller)
    holder = holders.get(source)
    if holder is None:
        raise NoRoute(f"no token source is named {source!r}")
    # A failure shows in the status below, with the error and the next attempt.
    with contextlib.suppress(TokenUnavailable):
        await holder.refresh_now()
    return web.json_response({source: _describe(holder.status())})


def _require_admin(request: web.BaseRequest, caller: Caller | None) -> None:
    peer = parse_address(request.remote)
    on_loopback = peer is not None and peer.is_loopback
    if on_loopback and caller is not None and caller.kind == "network":
        return
    if caller is not None and (
        f"{ADMIN}:{request.method}" in caller.grants or f"{ADMIN}:*" in caller.grants
    ):
        return
    raise Forbidden(
        "the operator endpoints answer loopback callers and clients granted "
        f"{ADMIN}:{request.method}"
    )


def _describe(status: HolderStatus) -> dict[str, object]:
    if status.has_valid_token:
        state = "valid"
    elif status.retry_in_s is not None:
        state = "failing"
    else:
        state = "empty"
    return {
        "state": state,
        "expires_in_s": _rounded(status.expires_in_s),
        "expires_at": status.expires_at,
        "last_refreshed_at": status.last_refreshed_at,
        "last_error": status.last_error,
        "consecutive_failures": status.consecutive_failures,
        "retry_in_s": _rounded(status.retry_in_s),
        "requests_last_hour": status.requests_last_hour,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
