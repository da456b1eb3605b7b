"""The demo backend: OAuth2 identity providers and four upstreams that demand tokens.

`inventory-proxy demo` serves it on loopback and the test suite uses it as the real far
side of the proxy. `DemoBackend` assembles everything on one port; the factories and
`IdentityProvider` compose smaller setups.
"""

from proxy.demo.backend import ClientCredentials, DemoBackend
from proxy.demo.client_assertions import CLIENT_ASSERTION_TYPE
from proxy.demo.identity_provider import (
    AuthMethod,
    ClientRegistration,
    IdentityProvider,
    JwtAlgorithm,
    RequestFormat,
    TokenFormat,
    announced_expires_in,
)
from proxy.demo.inventory import build_inventory_app
from proxy.demo.pricing import build_price_app
from proxy.demo.promising import build_promising_app
from proxy.demo.stock import InventoryStock, Supply, format_vendor_ts
from proxy.demo.upstreams import (
    RecordedCall,
    TokenVerifier,
    UpstreamRecorder,
    protected_app,
)

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "AuthMethod",
    "ClientCredentials",
    "ClientRegistration",
    "DemoBackend",
    "IdentityProvider",
    "InventoryStock",
    "JwtAlgorithm",
    "RecordedCall",
    "RequestFormat",
    "Supply",
    "TokenFormat",
    "TokenVerifier",
    "UpstreamRecorder",
    "announced_expires_in",
    "build_inventory_app",
    "build_price_app",
    "build_promising_app",
    "format_vendor_ts",
    "protected_app",
]
