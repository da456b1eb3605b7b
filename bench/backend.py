"""The benchmark's far side: a fast inventory upstream and its token endpoint.

One aiohttp process (on uvloop when installed) plays both, so the upstream checks
bearer tokens in memory with ``IdentityProvider.verify``:

    POST /inventory/T/v1/oauth2/token            the proxy's identity provider
    GET  /inventory/T/v1/items/{itemId}          a small item record
    POST /inventory/T/v1/availability/network    network availability per line
    POST /_bench/oauth2/token                    a second provider, 12-hour tokens
    GET  /_stats                                 counters, never proxied

The second provider issues the fixed token that the direct, pass-through and nginx
targets send, so that ``--token-lifetime-s`` shortens only the proxy's tokens and
``token_requests`` in ``/_stats`` counts only the proxy's requests. Client secrets
arrive in the environment (``BENCH_IV_CLIENT_SECRET``, ``BENCH_FIXED_CLIENT_SECRET``),
never on the command line.
"""

from __future__ import annotations

import argparse
import os
import zlib
from dataclasses import dataclass

from aiohttp import web
from workloads import TENANT

from proxy.demo.identity_provider import IdentityProvider
from proxy.server import new_event_loop

PROXY_CLIENT_ID = "bench-oms"
FIXED_CLIENT_ID = "bench-fixed"
PROXY_TOKEN_PATH = f"/inventory/{TENANT}/v1/oauth2/token"
FIXED_TOKEN_PATH = "/_bench/oauth2/token"  # noqa: S105 - a path, not a secret
# IBM's token endpoints issue 12-hour tokens; the proxy's get the same by default.
IBM_TOKEN_LIFETIME_S = 43200.0
FIXED_TOKEN_LIFETIME_S = IBM_TOKEN_LIFETIME_S
STATS_PATH = "/_stats"

_NO_FUTURE_SUPPLY_TS = "2500-01-01T00:00:00.000+0000"
_SHIP_TS = "2026-12-04T10:00:00.000+0000"


@dataclass
class Counters:
    """What the bench reads back: calls received, and of those, calls refused."""

    upstream_calls: int = 0
    unauthorized: int = 0


class BenchUpstream:
    """The inventory routes; every call needs a token from either provider."""

    def __init__(
        self, proxy_idp: IdentityProvider, fixed_idp: IdentityProvider
    ) -> None:
        self.proxy_idp = proxy_idp
        self.fixed_idp = fixed_idp
        self.counters = Counters()

    def build_app(self) -> web.Application:
        """The whole backend: both token endpoints, the upstream and the counters."""
        app = web.Application()
        app.router.add_post(PROXY_TOKEN_PATH, self.proxy_idp.handle_token_request)
        app.router.add_post(FIXED_TOKEN_PATH, self.fixed_idp.handle_token_request)
        app.router.add_get("/inventory/{tenant}/v1/items/{item_id}", self.item)
        app.router.add_post(
            "/inventory/{tenant}/v1/availability/network", self.availability
        )
        app.router.add_get(STATS_PATH, self.stats)
        return app

    def authorized(self, request: web.Request) -> bool:
        """Count the call and tell whether it carries a valid bearer token."""
        self.counters.upstream_calls += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and (
            self.proxy_idp.verify(token) or self.fixed_idp.verify(token)
        )
        if not valid:
            self.counters.unauthorized += 1
        return valid

    async def item(self, request: web.Request) -> web.Response:
        """A small item record, as a catalog or inventory service answers it."""
        if not self.authorized(request):
            return _unauthorized()
        item_id = request.match_info["item_id"]
        return web.json_response(
            {
                "itemId": item_id,
                "unitOfMeasure": "EACH",
                "productClass": "NEW",
                "description": f"Bench item {item_id}",
                "onhandAvailableQuantity": _quantity(item_id),
            }
        )

    async def availability(self, request: web.Request) -> web.Response:
        """Network availabilities for each line of the request, vendor-shaped."""
        if not self.authorized(request):
            return _unauthorized()
        try:
            body = await request.json()
            lines = body["lines"]
            group = body.get("distributionGroupId", "DG_ONLINE")
            answers = [_line_availability(line, group) for line in lines]
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response(
                {"error_message": "the body must carry lines with lineId and itemId"},
                status=400,
            )
        return web.json_response({"lines": answers})

    async def stats(self, _request: web.Request) -> web.Response:
        """Counters since start; the bench takes differences around each run."""
        return web.json_response(
            {
                "token_requests": self.proxy_idp.token_requests,
                "upstream_calls": self.counters.upstream_calls,
                "unauthorized": self.counters.unauthorized,
            }
        )


def _unauthorized() -> web.Response:
    # RFC 6750 section 3: the challenge names the error.
    return web.json_response(
        {"error": "invalid_token", "error_description": "missing or expired token"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="inventory", error="invalid_token"'},
    )


def _quantity(item_id: str) -> int:
    return zlib.crc32(item_id.encode()) % 50


def _line_availability(line: dict[str, str], group: str) -> dict[str, object]:
    quantity = _quantity(line["itemId"])
    return {
        "lineId": line["lineId"],
        "networkAvailabilities": [
            {
                "distributionGroupId": group,
                "totalAvailableQuantity": quantity,
                "onhandAvailableQuantity": quantity,
                "futureAvailableQuantity": 0,
                "earliestShipTs": _SHIP_TS,
                "onhandEarliestShipTs": _SHIP_TS,
                "futureEarliestShipTs": _NO_FUTURE_SUPPLY_TS,
            }
        ],
    }


def main() -> None:
    """Serve the backend on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-lifetime-s", type=float, default=IBM_TOKEN_LIFETIME_S)
    args = parser.parse_args()

    proxy_idp = IdentityProvider(
        {PROXY_CLIENT_ID: os.environ["BENCH_IV_CLIENT_SECRET"]},
        token_lifetime_s=args.token_lifetime_s,
    )
    fixed_idp = IdentityProvider(
        {FIXED_CLIENT_ID: os.environ["BENCH_FIXED_CLIENT_SECRET"]},
        token_lifetime_s=FIXED_TOKEN_LIFETIME_S,
    )
    web.run_app(
        BenchUpstream(proxy_idp, fixed_idp).build_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
