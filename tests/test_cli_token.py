"""``inventory-proxy token``: what a provider issues, without printing the token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from proxy.cli import main
from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import CLIENT_ID, CLIENT_SECRET, AiohttpServer


def write_config(tmp_path: Path, token_url: str, secret: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[token_sources.iv]
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
scope = "inventory"

[token_sources.key]
kind = "static"
value = "static-key-123"

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "https://inventory.example"
token_source = "iv"
""",
        encoding="utf-8",
    )
    return path


async def test_token_command_describes_a_jwt_without_showing_it(
    tmp_path: Path,
    aiohttp_server: AiohttpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lifetime, scope, JWT header and claims are printed; the token never is."""
    idp = IdentityProvider(
        {CLIENT_ID: CLIENT_SECRET}, token_format="jwt", token_lifetime_s=600
    )
    server: TestServer = await aiohttp_server(idp.build_app())
    config = write_config(
        tmp_path, str(server.make_url("/oauth2/token")), CLIENT_SECRET
    )

    code = await _run(["token", "iv", "--config", str(config)])

    out = capsys.readouterr().out
    assert code == 0
    assert "expires_in:  600 s" in out
    assert "scope:       inventory" in out
    assert "format:      JWT" in out
    assert f'claim sub: "{CLIENT_ID}"' in out
    assert idp.last_token is not None
    assert idp.last_token not in out
    assert idp.last_token.split(".")[2] not in out
    assert CLIENT_SECRET not in out


async def test_token_command_reports_a_refusal_with_exit_code_1(
    tmp_path: Path,
    idp: IdentityProvider,
    idp_server: TestServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused client gets the provider's error code on stderr, not the secret."""
    config = write_config(
        tmp_path, str(idp_server.make_url("/oauth2/token")), "wrong-secret-42"
    )

    code = await _run(["token", "iv", "--config", str(config)])

    captured = capsys.readouterr()
    assert code == 1
    assert "401 invalid_client" in captured.err
    assert "wrong-secret-42" not in captured.out + captured.err


async def test_token_command_names_an_unknown_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source that is not configured is a config error naming the key."""
    config = write_config(tmp_path, "https://idp.example/token", "s")

    code = await _run(["token", "nope", "--config", str(config)])

    assert code == 2
    assert "token_sources.nope: is not configured (known: iv, key)" in (
        capsys.readouterr().err
    )


async def _run(argv: list[str]) -> int:
    """Run the command in a worker thread: it starts an event loop of its own."""
    return await asyncio.to_thread(main, argv)
