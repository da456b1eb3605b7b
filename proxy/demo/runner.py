"""``inventory-proxy demo``: the proxy and the demo backend in one loopback process.

The backend (two identity providers and the inventory, reservation, delivery and
price services) starts on an ephemeral port; the proxy starts in front of it with
``demo.toml``, whose ``${DEMO_*}`` placeholders are filled with the backend's address
and the client credentials it registered for this run. Ctrl-C (or SIGTERM) stops
both, the proxy first so that no call is cut off by the backend going away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from importlib.resources import files

from proxy.config import LogConfig, ProxyConfig, parse_config
from proxy.demo.backend import ClientCredentials, DemoBackend
from proxy.demo.identity_provider import AuthMethod
from proxy.observability import configure_logging
from proxy.server import ProxyServer

DEMO_CONFIG = files("proxy.demo").joinpath("demo.toml")
INVENTORY_TOKEN_LIFETIME_S = 30.0
PRICING_TOKEN_LIFETIME_S = 45.0


def run_demo(port: int = 8080) -> int:
    """Run the demo until interrupted; returns the process exit code."""
    try:
        asyncio.run(_serve_demo(port))
    except OSError as exc:
        print(f"inventory-proxy demo: cannot listen on port {port}: {exc.strerror}")
        return 1
    return 0


def run_demo_backend(host: str, port: int) -> int:
    """Run only the demo backend, with client credentials from the environment.

    For a proxy started separately, e.g. in docker-compose, with
    ``config/demo.toml``: both read the same ``DEMO_*`` variables.
    """
    try:
        inventory = _client_from_env("DEMO_IV", "client_secret_basic")
        pricing = _client_from_env("DEMO_PRICING", "client_secret_post")
    except KeyError as missing:
        print(f"inventory-proxy demo-backend: set {missing.args[0]}", file=sys.stderr)
        return 2
    backend = DemoBackend(
        host=host,
        port=port,
        tenant_id=os.environ.get("DEMO_TENANT", "demo-tenant"),
        inventory_token_lifetime_s=INVENTORY_TOKEN_LIFETIME_S,
        pricing_token_lifetime_s=PRICING_TOKEN_LIFETIME_S,
        inventory_client=inventory,
        pricing_client=pricing,
    )
    try:
        asyncio.run(_serve_backend(backend))
    except OSError as exc:
        print(f"inventory-proxy demo-backend: cannot listen: {exc.strerror}")
        return 1
    return 0


async def _serve_backend(backend: DemoBackend) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    configure_logging(LogConfig(format="json"))
    async with backend:
        await stop.wait()


def _client_from_env(prefix: str, auth_method: AuthMethod) -> ClientCredentials:
    return ClientCredentials(
        client_id=os.environ[f"{prefix}_CLIENT_ID"],
        client_secret=os.environ[f"{prefix}_CLIENT_SECRET"],
        auth_method=auth_method,
    )


def demo_config(backend: DemoBackend, port: int) -> ProxyConfig:
    """``demo.toml`` filled in for a started ``backend``, the proxy on ``port``."""
    environ = {
        "DEMO_BACKEND": backend.base_url,
        "DEMO_TENANT": backend.tenant_id,
        "DEMO_IV_CLIENT_ID": backend.inventory_client.client_id,
        "DEMO_IV_CLIENT_SECRET": backend.inventory_client.client_secret,
        "DEMO_PRICING_CLIENT_ID": backend.pricing_client.client_id,
        "DEMO_PRICING_CLIENT_SECRET": backend.pricing_client.client_secret,
    }
    config = parse_config(DEMO_CONFIG.read_text("utf-8"), environ, origin="demo.toml")
    server = config.server.model_copy(update={"port": port})
    return config.model_copy(update={"server": server})


async def _serve_demo(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    backend = DemoBackend(
        inventory_token_lifetime_s=INVENTORY_TOKEN_LIFETIME_S,
        pricing_token_lifetime_s=PRICING_TOKEN_LIFETIME_S,
    )
    configure_logging(LogConfig(format="console"))
    async with backend:
        config = demo_config(backend, port)
        configure_logging(config.log)
        async with ProxyServer(config) as server:
            url = f"http://{config.server.host}:{server.port}"
            print(banner(url, backend), flush=True)
            await stop.wait()
    print("inventory-proxy demo: stopped", file=sys.stderr, flush=True)


def banner(proxy_url: str, backend: DemoBackend) -> str:
    """What the demo prints once it listens: what runs, and curl lines to try."""
    tenant = backend.tenant_id
    line = {
        "lineId": "1",
        "itemId": "SKU-1024",
        "unitOfMeasure": "EACH",
        "productClass": "NEW",
        "deliveryMethod": "SHP",
    }
    availability = {"distributionGroupId": "DG_ONLINE", "lines": [line]}
    reservation = {
        "reference": "CART-123",
        "timeToExpire": 15,
        "lines": [{**line, "shipNode": "DC1", "quantity": 2}],
    }
    delivery = {
        "itemInfo": {k: line[k] for k in ("itemId", "unitOfMeasure", "productClass")},
        "destination": {
            "format": "ADDRESS",
            "value": {"countryCode": "US", "postalCode": "10001"},
        },
        "shippingGroupId": "STANDARD",
    }

    def post(path: str, body: object) -> str:
        return (
            f"curl -s -X POST {proxy_url}{path} "
            f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'"
        )

    return "\n".join(
        [
            "",
            f"inventory-proxy demo: proxy on {proxy_url}, "
            f"demo backend on {backend.base_url}",
            f"Tokens last {INVENTORY_TOKEN_LIFETIME_S:g} s (inventory) and "
            f"{PRICING_TOKEN_LIFETIME_S:g} s (pricing); watch token.refreshed below.",
            "The calls carry no credentials: the proxy attaches the tokens.",
            "",
            "# What IBM Sterling OMS does first: ask for its own token (a stand-in)",
            f"curl -s -X POST {proxy_url}/inventory/{tenant}/v1/oauth2/token "
            "-d grant_type=client_credentials",
            "# Network availability",
            post(f"/inventory/{tenant}/v1/availability/network", availability),
            "# Reserve two units",
            post(f"/inventory/{tenant}/v1/reservations", reservation),
            "# Delivery-date estimate",
            post(f"/promising/{tenant}/v1/delivery-dates", delivery),
            "# Prices (another identity provider, another token)",
            f"curl -s '{proxy_url}/price/v1/prices?itemId=SKU-1024&currency=USD'",
            "# Readiness",
            f"curl -s {proxy_url}/readyz",
            "",
            "Ctrl-C stops the demo.",
            "",
        ]
    )
