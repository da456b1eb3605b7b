"""Identical concurrent lookups share one upstream call; repeats may hit a cache."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.config import ConfigError, parse_config
from tests.conftest import (
    Call,
    LogCapture,
    ProxyFactory,
    RecordingUpstream,
    sample,
)

SHARE = {"share_identical": ["POST /*/v1/availability/*"]}
LOOKUP = {
    "distributionGroupId": "DG_ONLINE",
    "lines": [{"lineId": "1", "itemId": "SKU-1024", "unitOfMeasure": "EACH"}],
}
PATH = "/inventory/T/v1/availability/network"


def gated(recorder: RecordingUpstream, headers: dict[str, str] | None = None) -> None:
    """Answers wait for ``recorder.release``, so concurrent calls overlap."""

    async def respond(_request: web.Request, call: Call) -> web.Response:
        await recorder.release.wait()
        body = {"lines": [{"lineId": "1", "n": len(recorder.calls)}]}
        return web.json_response(body, headers=headers)

    recorder.respond = respond


async def until_in_flight(proxy: TestClient[Any, Any], count: int) -> None:
    """Wait (bounded) until the proxy holds ``count`` calls besides this scrape."""
    async with asyncio.timeout(20):
        while True:
            text = await (await proxy.get("/metrics")).text()
            if (sample(text, "inventory_proxy_calls_in_flight") or 0) > count:
                return
            await asyncio.sleep(0.01)


async def test_concurrent_identical_lookups_share_one_upstream_call(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    logs: LogCapture,
) -> None:
    """Twenty identical POSTs in flight together cost the upstream one call."""
    recorder, _ = upstream
    gated(recorder)
    proxy = await make_proxy(route=SHARE)

    calls = [asyncio.create_task(proxy.post(PATH, json=LOOKUP)) for _ in range(20)]
    await until_in_flight(proxy, 20)
    recorder.release.set()
    responses = await asyncio.gather(*calls)

    assert [response.status for response in responses] == [200] * 20
    ids = {response.headers["X-Request-ID"] for response in responses}
    assert len(ids) == 20
    outcomes = [line["sharing"] for line in logs.events("request.completed")]
    assert len(recorder.calls) + outcomes.count("joined") == 20
    assert len(recorder.calls) == 1


async def test_different_bodies_are_not_shared(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Lookups for other items go up on their own."""
    proxy = await make_proxy(route=SHARE)

    await asyncio.gather(
        *(
            proxy.post(PATH, json={**LOOKUP, "distributionGroupId": f"DG{n}"})
            for n in range(5)
        )
    )

    assert len(upstream[0].calls) == 5


async def test_requests_outside_the_rules_are_never_shared(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Reservations are not listed, so identical ones each reach the upstream."""
    recorder, _ = upstream
    gated(recorder)
    proxy = await make_proxy(route=SHARE)

    calls = [
        asyncio.create_task(proxy.post("/inventory/T/v1/reservations", json=LOOKUP))
        for _ in range(3)
    ]
    for _ in range(200):
        if len(recorder.calls) == 3:
            break
        await asyncio.sleep(0.01)
    recorder.release.set()
    await asyncio.gather(*calls)

    assert len(recorder.calls) == 3


async def test_micro_cache_answers_repeats_within_its_ttl(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """With cache_ttl_s, a repeat is served from the cache until the TTL passes."""
    proxy = await make_proxy(route={**SHARE, "cache_ttl_s": 1.0})

    first = await proxy.post(PATH, json=LOOKUP)
    repeat = await proxy.post(PATH, json=LOOKUP)
    calls_while_fresh = len(upstream[0].calls)
    await asyncio.sleep(1.1)  # past the 1 s TTL
    await proxy.post(PATH, json=LOOKUP)

    assert await first.text() == await repeat.text()
    assert calls_while_fresh == 1
    assert len(upstream[0].calls) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "private, max-age=60"},
        {"Set-Cookie": "session=1"},
        {"Vary": "X-Partner"},
    ],
)
async def test_answers_that_forbid_it_are_not_cached(
    make_proxy: ProxyFactory,
    upstream: tuple[RecordingUpstream, TestServer],
    headers: dict[str, str],
) -> None:
    """no-store, private, cookies and foreign Vary keep an answer out of the cache."""
    recorder, _ = upstream

    async def respond(_request: web.Request, _call: Call) -> web.Response:
        return web.json_response({"lines": []}, headers=headers)

    recorder.respond = respond
    proxy = await make_proxy(route={**SHARE, "cache_ttl_s": 30})

    await proxy.post(PATH, json=LOOKUP)
    await proxy.post(PATH, json=LOOKUP)

    assert len(recorder.calls) == 2


async def test_sharing_is_off_by_default(
    make_proxy: ProxyFactory, upstream: tuple[RecordingUpstream, TestServer]
) -> None:
    """Without share_identical every call reaches the upstream."""
    proxy = await make_proxy()

    for _ in range(3):
        await proxy.post(PATH, json=LOOKUP)

    assert len(upstream[0].calls) == 3


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"share_identical": ["availability"]}, "must read 'METHOD /path/pattern'"),
        ({"cache_ttl_s": 1}, "cache_ttl_s applies to share_identical requests"),
    ],
)
def test_sharing_settings_are_checked(route: dict[str, Any], message: str) -> None:
    """Malformed rules and a cache without rules stop start-up."""
    lines = [
        "[token_sources.iv]",
        'token_url = "https://idp.example/token"',
        'client_id = "oms"',
        'client_secret = "s"',
        "[upstreams.inventory]",
        'path_prefix = "/inventory"',
        'base_url = "https://inventory.example"',
        'token_source = "iv"',
        *(f"{key} = {json.dumps(value)}" for key, value in route.items()),
    ]

    with pytest.raises(ConfigError, match=message):
        parse_config("\n".join(lines), {})
