"""One loopback server that plays every system the proxy talks to.

`DemoBackend` assembles two identity providers and the four upstreams into a single
aiohttp app, served on 127.0.0.1 for `inventory-proxy demo` and reused by tests as the
real far side of the proxy. With T the tenant id, the layout is:

    /inventory/T/v1/oauth2/token            IBM identity provider, client_secret_basic
    /inventory/T/v1/availability/network    inventory (IBM)
    /inventory/T/v1/availability/node
    /inventory/T/v1/reservations
    /promising/T/v1/oauth2/token            the same IBM identity provider
    /promising/T/v1/delivery-dates          promising (IBM)
    /idp/oauth2/token                       generic identity provider,
                                            client_secret_post, RS256 JWTs
    /price/v1/prices                        pricing, GET and POST

The tricky part: each IBM token endpoint lives under the prefix of the service it
guards, and aiohttp sub-applications cannot share a prefix. Each token endpoint is
therefore its own sub-application on the longer `.../v1/oauth2` prefix; aiohttp (3.10
and later, as the project requires) resolves the longest matching prefix first, so the
service's sub-application on the shorter prefix never swallows token requests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import structlog
from aiohttp import web
from yarl import URL

from proxy.demo.identity_provider import AuthMethod, IdentityProvider
from proxy.demo.inventory import build_inventory_app
from proxy.demo.pricing import build_price_app
from proxy.demo.promising import build_promising_app
from proxy.demo.stock import InventoryStock
from proxy.demo.upstreams import UpstreamRecorder

__all__ = ["ClientCredentials", "DemoBackend"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClientCredentials:
    """A client registered at one demo identity provider; the repr hides the secret."""

    client_id: str
    client_secret: str = field(repr=False)
    auth_method: AuthMethod

    def as_registration(self) -> dict[str, str]:
        """The `clients` mapping an IdentityProvider takes."""
        return {self.client_id: self.client_secret}


class DemoBackend:
    """The identity providers and upstreams of the demo, on one loopback port.

    Every service and token endpoint is its own app attribute (`inventory_app`,
    `inventory_token_app`, ...), built in the constructor and mounted only by `start`,
    so tests may append fault-injecting middlewares to any of them first. Client ids
    and secrets are random per instance unless given. URL properties work between
    `start` and `stop`. Use as `async with DemoBackend() as backend:` or call `start`
    and `stop`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = "demo-tenant",
        inventory_token_lifetime_s: float = 43200.0,
        pricing_token_lifetime_s: float = 3600.0,
        inventory_client: ClientCredentials | None = None,
        pricing_client: ClientCredentials | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tenant_id = tenant_id
        self._runner: web.AppRunner | None = None
        self._base_url: URL | None = None

        # Identity providers, one client each: given, or random for this run.
        self.inventory_client = inventory_client or _new_client(
            "oms-iv", "client_secret_basic"
        )
        self.pricing_client = pricing_client or _new_client(
            "oms-pricing", "client_secret_post"
        )
        self.inventory_idp = IdentityProvider(
            self.inventory_client.as_registration(),
            auth_methods=(self.inventory_client.auth_method,),
            token_lifetime_s=inventory_token_lifetime_s,
        )
        self.pricing_idp = IdentityProvider(
            self.pricing_client.as_registration(),
            auth_methods=(self.pricing_client.auth_method,),
            token_lifetime_s=pricing_token_lifetime_s,
            token_format="jwt",  # noqa: S106  # a format, no secret
            jwt_algorithm="RS256",
        )

        # Upstreams and what they record.
        self.stock = InventoryStock()
        self.inventory_recorder = UpstreamRecorder()
        self.promising_recorder = UpstreamRecorder()
        self.price_recorder = UpstreamRecorder()
        verify_ibm = self.inventory_idp.verify
        self.inventory_app = build_inventory_app(
            verify_ibm, self.inventory_recorder, self.stock, tenant_id=tenant_id
        )
        self.promising_app = build_promising_app(
            verify_ibm, self.promising_recorder, self.stock, tenant_id=tenant_id
        )
        self.price_app = build_price_app(self.pricing_idp.verify, self.price_recorder)

        # Token endpoints are their own apps so that faults can target them alone.
        self.inventory_token_app = self.inventory_idp.build_app("/token")
        self.promising_token_app = self.inventory_idp.build_app("/token")
        self.pricing_token_app = self.pricing_idp.build_app("/token")

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` once started."""
        return str(self._url(""))

    @property
    def inventory_base_url(self) -> str:
        """The IBM base an OMS is configured with (`iv_integration.baseUrl`)."""
        return str(self._url("/inventory"))

    @property
    def inventory_token_url(self) -> str:
        """The IBM token endpoint under the inventory base."""
        return str(self._url(f"/inventory/{self.tenant_id}/v1/oauth2/token"))

    @property
    def promising_base_url(self) -> str:
        """The IBM promising base, before the tenant id."""
        return str(self._url("/promising"))

    @property
    def promising_token_url(self) -> str:
        """The IBM token endpoint under the promising base; same provider and client."""
        return str(self._url(f"/promising/{self.tenant_id}/v1/oauth2/token"))

    @property
    def price_base_url(self) -> str:
        """The pricing service base; prices are at `{base}/v1/prices`."""
        return str(self._url("/price"))

    @property
    def pricing_token_url(self) -> str:
        """The generic identity provider's token endpoint, for the pricing client."""
        return str(self._url("/idp/oauth2/token"))

    async def start(self) -> None:
        """Assemble the apps, bind `host:port` (0 picks a free port) and serve.

        A backend starts once; `stop` ends it.
        """
        if self._runner is not None or self._base_url is not None:
            raise RuntimeError("a demo backend starts once; create a new one")

        runner = web.AppRunner(self._assemble(), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise

        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._base_url = URL.build(scheme="http", host=host, port=port)
        log.info("demo.backend_started", base_url=str(self._base_url))

    async def stop(self) -> None:
        """Stop serving; in-flight requests get up to 5 seconds. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        log.info("demo.backend_stopped", base_url=str(self._base_url))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _assemble(self) -> web.Application:
        # Adding a sub-application freezes its middlewares, hence only now.
        tenant = self.tenant_id
        root = web.Application()
        root.add_subapp(f"/inventory/{tenant}/v1/oauth2", self.inventory_token_app)
        root.add_subapp(f"/promising/{tenant}/v1/oauth2", self.promising_token_app)
        root.add_subapp("/idp/oauth2", self.pricing_token_app)
        root.add_subapp("/inventory", self.inventory_app)
        root.add_subapp("/promising", self.promising_app)
        root.add_subapp("/price", self.price_app)
        root.router.add_get("/healthz", _healthy)
        return root

    def _url(self, path: str) -> URL:
        if self._base_url is None or self._runner is None:
            raise RuntimeError("the demo backend has no URL until start() returns")
        return self._base_url.with_path(path) if path else self._base_url


async def _healthy(_request: web.Request) -> web.Response:
    """For container health checks: the backend is up."""
    return web.json_response({"status": "ok"})


def _new_client(prefix: str, auth_method: AuthMethod) -> ClientCredentials:
    return ClientCredentials(
        client_id=f"{prefix}-{secrets.token_hex(4)}",
        client_secret=secrets.token_urlsafe(32),
        auth_method=auth_method,
    )
