"""A bare aiohttp pass-through: the floor an aiohttp proxy cannot go below.

Every request goes to the upstream with the same path, query, body and headers, less
the hop-by-hop ones, and with a fixed ``Authorization`` taken from the environment
(``BENCH_AUTHORIZATION``). There is no token holder, no access log, no checks and no
request id: what remains is aiohttp's server, its pooled client and one copy of each
body, which is the cost any aiohttp-based proxy pays. Bodies are neither decompressed
nor streamed; the answers are small.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.server import new_event_loop

SESSION = web.AppKey("session", aiohttp.ClientSession)
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


def build_app(upstream: str, authorization: str) -> web.Application:
    """Forward everything to ``upstream`` with ``authorization`` on every call."""

    async def forward(request: web.Request) -> web.Response:
        headers = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _NOT_FORWARDED
        )
        headers["Authorization"] = authorization
        body = await request.read()

        url = URL(upstream + request.raw_path, encoded=True)
        async with request.app[SESSION].request(
            request.method, url, headers=headers, data=body or None
        ) as answer:
            payload = await answer.read()
            kept = CIMultiDict(
                (name, value)
                for name, value in answer.headers.items()
                if name.lower() not in _NOT_FORWARDED
            )
        return web.Response(status=answer.status, headers=kept, body=payload)

    app = web.Application(handler_args={"auto_decompress": False})
    app.cleanup_ctx.append(_client_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    ) as session:
        app[SESSION] = session
        yield


def main() -> None:
    """Serve the pass-through on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    args = parser.parse_args()

    app = build_app(args.upstream.rstrip("/"), os.environ["BENCH_AUTHORIZATION"])
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
