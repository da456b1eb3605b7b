"""A bare aiohttp pass-through: the floor an aiohttp proxy cannot go below.

Every request goes to the upstream with the same path, query, body and headers, less
the hop-by-hop ones, and with a fixed ``Authorization`` taken from the environment
(``BENCH_AUTHORIZATION``). There is no token holder, no access log, no checks and no
request id: what remains is aiohttp's server, its pooled client and one copy of each
body, which is the cost any aiohttp-based proxy pays. Bodies are neither decompressed
nor streamed; the answers are small.

It runs on aiohttp's low-level server (``web.Server``), as the proxy does: a
``web.Application`` adds routing and costs about 8 % more per call, so it would not
be the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

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


async def serve(port: int, upstream: str, authorization: str) -> None:
    """Forward everything to ``upstream`` with ``authorization`` until SIGTERM."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    )

    async def forward(request: web.BaseRequest) -> web.Response:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        headers["Authorization"] = authorization
        body = await request.read()

        url = URL(upstream + request.raw_path, encoded=True)
        async with session.request(
            request.method, url, headers=headers, data=body or None
        ) as answer:
            payload = await answer.read()
            kept = CIMultiDict(
                (name, value)
                for name, value in answer.headers.items()
                if name.lower() not in _NOT_FORWARDED
            )
        return web.Response(status=answer.status, headers=kept, body=payload)

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


def main() -> None:
    """Serve the pass-through on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    args = parser.parse_args()

    loop = new_event_loop()
    try:
        loop.run_until_complete(
            serve(
                args.port,
                args.upstream.rstrip("/"),
                os.environ["BENCH_AUTHORIZATION"],
            )
        )
    finally:
        loop.close()


if __name__ == "__main__":
    main()
