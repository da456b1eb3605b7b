"""A bare aiohttp pass-through: the floor an aiohttp proxy cannot go below.

Every request goes to the upstream with the same path, query, body and headers, less
the hop-by-hop ones, and with a fixed ``Authorization`` taken from the environment
(``BENCH_AUTHORIZATION``). There is no token holder, no access log, no checks and no
request id: what remains is aiohttp's server, its pooled client and one copy of each
body, which is the cost any aiohttp-based proxy pays. Bodies are neither decompressed
nor streamed; the answers are small.

It runs on aiohttp's low-level server (``web.Server``), as the proxy does: a
``web.Application`` adds routing and costs about 8 % more per call, so it would not
be the floor. It sends with ``ClientSession.request``, aiohttp's client as its
documentation has it. ``--client pool`` sends through the proxy's own
``UpstreamPool`` instead, which reaches past that API into aiohttp's connector as
the proxy does: the floor for a forwarder built the proxy's way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.http_client import UpstreamPool
from proxy.server import new_event_loop

_NOT_FORWARDED = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


async def serve(port: int, upstream: str, authorization: str, client: str) -> None:
    """Forward everything to ``upstream`` with ``authorization`` until SIGTERM."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    )
    pool = UpstreamPool(timeout=aiohttp.ClientTimeout(total=300, sock_connect=30))

    async def via_session(
        method: str, url: URL, headers: CIMultiDict[str], body: bytes | None
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        async with session.request(method, url, headers=headers, data=body) as answer:
            return answer.status, answer.headers, await answer.read()

    async def via_pool(
        method: str, url: URL, headers: CIMultiDict[str], body: bytes | None
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        answer = await pool.send(method, url, headers, body)
        try:
            return answer.status, answer.headers, await answer.read()
        finally:
            answer.release()

    answer_of = via_pool if client == "pool" else via_session

    async def forward(request: web.BaseRequest) -> web.Response:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        headers["Authorization"] = authorization
        body = await request.read()

        url = URL(upstream + request.raw_path, encoded=True)
        status, answer_headers, payload = await answer_of(
            request.method, url, headers, body or None
        )
        kept = CIMultiDict(
            (name, value)
            for name, value in answer_headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        return web.Response(status=status, headers=kept, body=payload)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    runner = web.ServerRunner(
        web.Server(forward, auto_decompress=False, access_log=None)
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await stopping.wait()
    finally:
        await runner.cleanup()
        await session.close()
        await pool.close()


def main() -> None:
    """Serve the pass-through on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument(
        "--client",
        choices=("session", "pool"),
        default="session",
        help="ClientSession.request, or the proxy's UpstreamPool (%(default)s)",
    )
    args = parser.parse_args()

    loop = new_event_loop()
    try:
        loop.run_until_complete(
            serve(
                args.port,
                args.upstream.rstrip("/"),
                os.environ["BENCH_AUTHORIZATION"],
                args.client,
            )
        )
    finally:
        loop.close()


if __name__ == "__main__":
    main()
