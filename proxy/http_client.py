"""The proxy's outbound HTTP clients: pooled, and adding nothing of their own."""

from __future__ import annotations

import ssl

import aiohttp

# Connections kept open per pool; one pool per upstream, one for token requests.
POOL_CONNECTIONS = 256
# For pools whose every request sets its own timeout: a backstop only.
BACKSTOP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=30)


def pooled_session(
    *,
    timeout: aiohttp.ClientTimeout | None = None,
    tls: ssl.SSLContext | bool = True,
) -> aiohttp.ClientSession:
    """A keep-alive pool that sends only what the caller gave it.

    No cookie jar (one caller's cookies must never reach another's call), no
    decompression (bodies pass through untouched), no automatic Accept-Encoding
    or User-Agent (the upstream sees the OMS's own headers), and no proxy settings
    from the environment. ``tls`` is how certificates are verified: the default
    store (True), a private CA's context, or not at all (False).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=POOL_CONNECTIONS, ttl_dns_cache=60, ssl=tls
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        trust_env=False,
        timeout=timeout or BACKSTOP_TIMEOUT,
    )
