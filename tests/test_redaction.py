"""No token or secret ever reaches a log line, an error body or a response header."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from proxy.demo.identity_provider import IdentityProvider
from tests.conftest import (
    CLIENT_SECRET,
    LogCapture,
    ProxyFactory,
    RecordingUpstream,
)


async def test_tokens_and_secrets_stay_out_of_logs_and_answers(
    make_proxy: ProxyFactory,
    idp: IdentityProvider,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """A run through success, replay, refusal and errors leaks no credential."""
    recorder, _ = upstream
    proxy = await make_proxy()
    caller_credential = "Bearer caller-credential-7f3a"
    seen: list[str] = []

    async def call(path: str) -> None:
        response = await proxy.get(path, headers={"Authorization": caller_credential})
        seen.append(str(response.headers) + await response.text())

    await call("/inventory/ok")
    idp.revoke()
    await asyncio.gather(*(call(f"/inventory/replayed/{n}") for n in range(5)))
    recorder.always_unauthorized = True
    await call("/inventory/refused")
    await call("/nowhere")
    await call("/inventory/../x")
    await call("/readyz")

    tokens = {
        call.headers["Authorization"].removeprefix("Bearer ") for call in recorder.calls
    }
    assert len(tokens) >= 2
    leaks = [CLIENT_SECRET, caller_credential, *tokens]
    for secret in leaks:
        assert secret not in logs.text
        assert all(secret not in answer for answer in seen)
    assert logs.events("request.completed")


async def test_bad_secret_is_not_logged(
    make_proxy: ProxyFactory, logs: LogCapture
) -> None:
    """A refused client secret is reported by code, never by value."""
    proxy = await make_proxy(source={"client_secret": "wrong-secret-9b1c"})

    response = await proxy.get("/inventory/x")

    assert response.status == 503
    assert "wrong-secret-9b1c" not in logs.text
    assert "wrong-secret-9b1c" not in await response.text()
    assert "invalid_client" in logs.text
