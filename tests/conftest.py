"""Shared fixtures: a real identity provider, a recording upstream, the proxy.

Everything runs as real aiohttp servers on 127.0.0.1 with ephemeral ports; the
pytest-aiohttp fixtures stop each server when its test ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from multidict import CIMultiDict

from proxy.app import Proxy
from proxy.config import LogConfig, ProxyConfig
from proxy.demo.identity_provider import IdentityProvider
from proxy.http_server import ProxyHttpServer
from proxy.observability import configure_logging, flush_logs

CLIENT_ID = "oms"
# RFC 6749 §2.3.1 says these characters must survive client_secret_basic.
CLIENT_SECRET = "s3cr+t/with:colon%41and space"

AiohttpServer = Callable[..., Awaitable[TestServer]]
AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class LogCapture:
    """The proxy's log output, as text and as parsed JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        flush_logs()
        return self.stream.getvalue()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.text.splitlines() if line]
        return [line for line in lines if name is None or line["event"] == name]


@pytest.fixture
def logs() -> LogCapture:
    capture = LogCapture()
    configure_logging(LogConfig(level="debug"), stream=capture.stream)
    return capture


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider({CLIENT_ID: CLIENT_SECRET}, token_lifetime_s=60)


@pytest.fixture
async def idp_server(
    idp: IdentityProvider, aiohttp_server: AiohttpServer
) -> TestServer:
    return await aiohttp_server(idp.build_app())


@dataclass
class Call:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes
    authorized: bool

    @property
    def body_sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class RecordingUpstream:
    """An upstream that checks tokens with the identity provider and records calls.

    ``respond`` may be replaced by a test to shape the answer to authorized calls;
    by default it echoes what it received as JSON.
    """

    idp: IdentityProvider
    calls: list[Call] = field(default_factory=list)
    always_unauthorized: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    respond: Callable[[web.Request, Call], Awaitable[web.StreamResponse]] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ")
        authorized = (
            authorization.startswith("Bearer ")
            and self.idp.verify(token)
            and not self.always_unauthorized
        )
        call = Call(
            request.method,
            request.raw_path,
            CIMultiDict(request.headers),
            await request.read(),
            authorized,
        )
        self.calls.append(call)
        if not authorized:
            return web.json_response(
                {"error": "invalid_token", "error_description": "token refused"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if self.respond is not None:
            return await self.respond(request, call)
        return web.json_response(
            {
                "method": call.method,
                "path_qs": call.path_qs,
                "body_sha256": call.body_sha256,
                "headers": {
                    name: value
                    for name, value in call.headers.items()
                    if name.lower() != "authorization"
                },
            }
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def upstream(
    idp: IdentityProvider, aiohttp_server: AiohttpServer
) -> AsyncIterator[tuple[RecordingUpstream, TestServer]]:
    recorder = RecordingUpstream(idp)
    server = await aiohttp_server(recorder.app())
    yield recorder, server
    recorder.release.set()


def proxy_config(
    token_url: str,
    upstream_url: str,
    *,
    source: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    token_sources: dict[str, Any] | None = None,
    upstreams: dict[str, Any] | None = None,
    clients: dict[str, Any] | None = None,
    inbound: dict[str, Any] | None = None,
) -> ProxyConfig:
    """A config for ``/inventory`` with source ``iv``; keywords override or add.

    ``source``, ``route`` and ``server`` override keys of the default tables;
    ``token_sources`` and ``upstreams`` add whole tables beside them.
    """
    return ProxyConfig.model_validate(
        {
            "server": {"port": 0, **(server or {})},
            "token_sources": {
                **(token_sources or {}),
                "iv": {
                    "token_url": token_url,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "timeout_s": 2,
                    "cold_start_wait_s": 0,
                    **(source or {}),
                },
            },
            "upstreams": {
                "inventory": {
                    "path_prefix": "/inventory",
                    "base_url": upstream_url,
                    "token_source": "iv",
                    "timeout_s": 5,
                    **(route or {}),
                },
                **(upstreams or {}),
            },
            "clients": clients or {},
            "inbound": inbound or {},
        }
    )


class ProxyTestServer(BaseTestServer):
    """The proxy for ``config`` on aiohttp's test server, served as ``serve`` does.

    The proxy opens when the server starts (``ProxyHttpServer``, as ``serve``
    runs it) and closes after the listener when the server closes.
    """

    def __init__(self, config: ProxyConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.proxy: Proxy | None = None

    async def _make_runner(self, **_kwargs: Any) -> web.ServerRunner:
        # Exactly the production server: the test server's own arguments
        # (handler_cancellation) would cancel a call whose caller hangs up, which
        # ``serve`` does not.
        self.proxy = await Proxy.open(self.config)
        return web.ServerRunner(ProxyHttpServer(self.proxy.handle))

    async def close(self) -> None:
        await super().close()
        if self.proxy is not None:
            await self.proxy.close()
            self.proxy = None


ProxyClient = TestClient[web.BaseRequest, None]
ProxyFactory = Callable[..., Awaitable[ProxyClient]]


@pytest.fixture
def make_proxy(
    idp_server: TestServer,
    upstream: tuple[RecordingUpstream, TestServer],
    aiohttp_client: AiohttpClient,
    logs: LogCapture,
) -> ProxyFactory:
    """Start the proxy in front of the fixtures' IdP and upstream."""

    async def start(
        token_url: str | None = None, upstream_url: str | None = None, **overrides: Any
    ) -> ProxyClient:
        config = proxy_config(
            token_url or str(idp_server.make_url("/oauth2/token")),
            upstream_url or str(upstream[1].make_url("/inventory")),
            **overrides,
        )
        return await aiohttp_client(ProxyTestServer(config), auto_decompress=False)

    return start


@dataclass
class RawResponse:
    status: int
    head: str
    body: bytes


async def send_raw(port: int, request: bytes, timeout_s: float = 10.0) -> RawResponse:
    """Send bytes exactly as given and read one response; for what clients tidy up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await asyncio.wait_for(reader.readexactly(length), timeout_s)
    finally:
        writer.close()
        await writer.wait_closed()
    text = head.decode("latin-1")
    return RawResponse(int(text.split(" ", 2)[1]), text, body)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None
