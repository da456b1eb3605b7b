"""inventory-proxy: an authenticating reverse proxy for an OMS's outbound service calls.

The order management system sends plain requests; the proxy attaches an OAuth2 access
token taken from one shared holder per token source and forwards the call to the
inventory, price, reservation or delivery-date service behind it.
"""

__version__ = "0.1.0"
