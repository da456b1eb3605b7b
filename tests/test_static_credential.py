"""Static credentials and header formats: API-key upstreams behind the same proxy."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import AiohttpServer, LogCapture, ProxyFactory

API_KEY = "k3y-Abc123-static"


class ApiKeyUpstream:
    """A service that takes an API key in X-API-Key and records what it saw."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.keys: list[str | None] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-API-Key")
        self.keys.append(key)
        self.headers.append(dict(request.headers))
        if key not in self.valid:
            return web.json_response({"message": "invalid api key"}, status=401)
        return web.json_response({"prices": []})


async def api_key_proxy(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    upstream: ApiKeyUpstream,
    source: dict[str, str],
) -> tuple[TestServer, TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    server = await aiohttp_server(app)
    proxy = await make_proxy(
        token_sources={"price_key": {"kind": "static", **source}},
        upstreams={
            "price": {
                "path_prefix": "/price",
                "base_url": str(server.make_url("/api")),
                "token_source": "price_key",
                "auth_header": "X-API-Key",
                "auth_format": "{token}",
            }
        },
    )
    return server, proxy


async def test_static_key_is_sent_in_the_configured_header(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer
) -> None:
    """The key goes in X-API-Key as it is; no Authorization is invented."""
    upstream = ApiKeyUpstream({API_KEY})
    _, proxy = await api_key_proxy(
        make_proxy, aiohttp_server, upstream, {"value": API_KEY}
    )

    response = await proxy.get(
        "/price/v1/prices?itemId=1", headers={"X-API-Key": "caller-supplied"}
    )

    assert response.status == 200
    assert upstream.keys == [API_KEY]
    assert "Authorization" not in upstream.headers[0]


async def test_refused_static_key_passes_back_without_replay(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer, logs: LogCapture
) -> None:
    """A static credential cannot be refreshed: the 401 reaches the caller once."""
    upstream = ApiKeyUpstream(set())
    _, proxy = await api_key_proxy(
        make_proxy, aiohttp_server, upstream, {"value": API_KEY}
    )

    response = await proxy.get("/price/v1/prices")

    assert response.status == 401
    assert upstream.keys == [API_KEY]
    assert API_KEY not in logs.text


async def test_key_file_is_reread_after_rotation(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """Replacing the key file changes the key on the next call, with no restart."""
    key_file = tmp_path / "price.key"
    key_file.write_text("old-key\n")
    upstream = ApiKeyUpstream({"old-key", "new-key"})
    _, proxy = await api_key_proxy(
        make_proxy, aiohttp_server, upstream, {"value_file": str(key_file)}
    )
    await proxy.get("/price/v1/prices")

    replacement = tmp_path / "price.key.new"
    replacement.write_text("new-key\n")
    replacement.replace(key_file)
    await proxy.get("/price/v1/prices")

    assert upstream.keys == ["old-key", "new-key"]


async def test_custom_header_format_wraps_an_oauth2_token(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer
) -> None:
    """auth_header and auth_format shape how an OAuth2 token is presented."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Auth-Token"))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    proxy = await make_proxy(
        upstream_url=str(server.make_url("/")),
        route={"auth_header": "X-Auth-Token", "auth_format": "Token token={token}"},
    )

    await proxy.get("/inventory/x")

    [value] = seen
    assert value is not None
    assert value.startswith("Token token=")
    assert len(value) > len("Token token=")
