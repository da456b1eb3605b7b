"""TLS: verified by default to upstreams, a private CA on request, and our listener."""

from __future__ import annotations

import hashlib
import re
import socket
import tomllib
from pathlib import Path

import aiohttp
import pytest

from proxy.cli import main
from proxy.server import ProxyServer, listener_tls
from tests.conftest import (
    AiohttpServer,
    LogCapture,
    ProxyFactory,
    RecordingUpstream,
    proxy_config,
)
from tests.pki import client_ssl_context, make_pki, server_ssl_context


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def tls_upstream(
    aiohttp_server: AiohttpServer, recorder: RecordingUpstream, tmp_path: Path
) -> tuple[str, Path]:
    """The recording upstream served over TLS by a private CA; its URL and CA file."""
    pki = make_pki(tmp_path)
    server = await aiohttp_server(
        recorder.app(), ssl=server_ssl_context(pki, require_client_cert=False)
    )
    return str(server.make_url("/inventory")), pki.ca_cert


async def test_upstream_certificate_is_verified_by_default(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    upstream: tuple[RecordingUpstream, object],
    tmp_path: Path,
) -> None:
    """A certificate from an unknown CA makes the call fail; no token is sent."""
    url, _ = await tls_upstream(aiohttp_server, upstream[0], tmp_path)
    proxy = await make_proxy(upstream_url=url)

    response = await proxy.get("/inventory/x")

    assert response.status == 502
    assert upstream[0].calls == []


async def test_private_ca_is_trusted_when_named(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    upstream: tuple[RecordingUpstream, object],
    tmp_path: Path,
) -> None:
    """ca_file lets the proxy verify an upstream signed by the estate's own CA."""
    url, ca_file = await tls_upstream(aiohttp_server, upstream[0], tmp_path)
    proxy = await make_proxy(upstream_url=url, route={"ca_file": str(ca_file)})

    response = await proxy.get("/inventory/x")

    assert response.status == 200
    assert upstream[0].calls[0].authorized


async def test_turning_verification_off_is_explicit_and_logged(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    upstream: tuple[RecordingUpstream, object],
    tmp_path: Path,
    logs: LogCapture,
) -> None:
    """tls_verify = false works, and says so at start-up."""
    url, _ = await tls_upstream(aiohttp_server, upstream[0], tmp_path)
    proxy = await make_proxy(upstream_url=url, route={"tls_verify": False})

    response = await proxy.get("/inventory/x")

    assert response.status == 200
    [warning] = logs.events("tls.verification_disabled")
    assert warning["upstream"] == "inventory"
    assert warning["level"] == "warning"


async def test_listener_serves_tls_with_the_configured_certificate(
    tmp_path: Path,
) -> None:
    """With tls_cert_file and tls_key_file the proxy's own port speaks HTTPS."""
    pki = make_pki(tmp_path)
    config = proxy_config(
        "https://idp.invalid/token",
        "https://inventory.invalid",
        server={
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
        },
        source={"cold_start_wait_s": 0},
    )
    server = ProxyServer(config, port=0, ssl_context=listener_tls(config))

    async with (
        server,
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{server.port}/healthz", ssl=client_ssl_context(pki)
        ) as response,
    ):
        status = response.status

    assert status == 200


def test_new_api_key_prints_a_key_its_digest_and_a_usable_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The printed digest is the key's SHA-256, and the table loads as config."""
    code = main(["new-api-key", "--client", "marketplace"])

    out = capsys.readouterr().out
    key = re.search(r"not stored\): (\S+)", out)
    digest = re.search(r"SHA-256 digest: ([0-9a-f]{64})", out)
    assert code == 0
    assert key is not None
    assert digest is not None
    assert hashlib.sha256(key.group(1).encode()).hexdigest() == digest.group(1)
    table = tomllib.loads(out[out.index("[clients.marketplace]") :])
    assert table["clients"]["marketplace"]["api_key_sha256"] == [digest.group(1)]


def test_two_new_keys_differ(capsys: pytest.CaptureFixture[str]) -> None:
    """Keys are random, 32 bytes of entropy each."""
    main(["new-api-key"])
    main(["new-api-key"])

    keys = re.findall(r"not stored\): (\S+)", capsys.readouterr().out)
    assert len(set(keys)) == 2
    assert all(len(key) >= 43 for key in keys)
