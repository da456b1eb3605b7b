"""Token requests per token lifetime: 1 and 4 replicas, with and without Redis.

Standalone: one process runs an identity provider, an upstream that checks every
bearer token, and the proxy replicas (``ProxyServer``, each on its own port), and
drives calls through every replica for a fixed number of token lifetimes. A
``redis-server`` is started on a free loopback port for the Redis scenarios and
stopped by its own handle at the end.

    .venv/bin/python bench/shared_store.py                 # 4 lifetimes of 2 s
    .venv/bin/python bench/shared_store.py --lifetimes 10 --token-lifetime-s 3

Each replica renews a tenth of a lifetime ahead, so one replica alone asks about
1.1 times per lifetime; four replicas in memory ask four times that, and four
replicas sharing Redis should ask as one.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet

from proxy.config import LogConfig, ProxyConfig
from proxy.demo.identity_provider import IdentityProvider
from proxy.observability import configure_logging
from proxy.server import ProxyServer
from proxy.token_store import TOKEN_KEY_ENV

CLIENT_ID = "bench-oms"
CLIENT_SECRET = "bench-secret"  # noqa: S105 - the bench's own throwaway client
PATH = "/inventory/T/v1/items/1"


@dataclass(frozen=True)
class Scenario:
    store: str
    replicas: int


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    seconds: float
    lifetimes: float
    calls: int
    failed: int
    token_requests: int

    @property
    def per_lifetime(self) -> float:
        return self.token_requests / self.lifetimes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(binary: str, port: int) -> subprocess.Popen[bytes]:
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(  # noqa: S603 - a fixed binary, our arguments
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.02)
    process.kill()
    raise SystemExit(f"redis-server did not listen on port {port}")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def upstream_app(idp: IdentityProvider) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not idp.verify(token):
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"itemId": "1", "available": 12})

    app = web.Application()
    app.router.add_get("/inventory/{tail:.*}", item)
    return app


def proxy_config(
    token_url: str, upstream_url: str, lifetime_s: float, store: dict[str, Any]
) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "server": {"port": 0},
            "log": {"level": "warning"},
            "token_sources": {
                "iv": {
                    "token_url": token_url,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "refresh_margin_s": lifetime_s / 10,
                    "cold_start_wait_s": 5,
                    "max_token_requests_per_hour": 100_000,
                }
            },
            "upstreams": {
                "inventory": {
                    "path_prefix": "/inventory",
                    "base_url": f"{upstream_url}/inventory",
                    "token_source": "iv",
                }
            },
            "token_store": store,
        }
    )


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, redis_url: str | None
) -> Outcome:
    lifetime_s = args.token_lifetime_s
    idp = IdentityProvider({CLIENT_ID: CLIENT_SECRET}, token_lifetime_s=lifetime_s)
    runners = []
    idp_runner, idp_url = await serve(idp.build_app())
    upstream_runner, upstream_url = await serve(upstream_app(idp))
    runners += [idp_runner, upstream_runner]
    store = {"kind": "redis", "url": redis_url} if scenario.store == "redis" else {}
    config = proxy_config(f"{idp_url}/oauth2/token", upstream_url, lifetime_s, store)

    started = time.monotonic()
    replicas = [ProxyServer(config, port=0) for _ in range(scenario.replicas)]
    replica_urls = []
    for replica in replicas:
        await replica.start()
        replica_urls.append(f"http://127.0.0.1:{replica.port}")
    try:
        calls, failed = await drive(
            replica_urls, lifetime_s * args.lifetimes, args.workers
        )
    finally:
        seconds = time.monotonic() - started
        for replica in reversed(replicas):
            await replica.stop()
        for runner in reversed(runners):
            await runner.cleanup()
    return Outcome(
        scenario, seconds, seconds / lifetime_s, calls, failed, idp.token_requests
    )


async def drive(urls: list[str], seconds: float, workers: int) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    counts = [0, 0]

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        while loop.time() < deadline:
            async with session.get(url + PATH) as response:
                await response.read()
                counts[0] += 1
                counts[1] += response.status != 200
            await asyncio.sleep(0.002)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(
            *(worker(session, url) for url in urls for _ in range(workers))
        )
    return counts[0], counts[1]


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print(
        f"\n{args.lifetimes} token lifetimes of {args.token_lifetime_s:g} s, "
        f"{args.workers} callers per replica, renewal a tenth of a lifetime ahead\n"
    )
    header = ("store", "replicas", "seconds", "calls", "failed", "token req", "/life")
    print("{:<7} {:>8} {:>8} {:>8} {:>7} {:>10} {:>7}".format(*header))
    for out in outcomes:
        print(
            f"{out.scenario.store:<7} {out.scenario.replicas:>8} {out.seconds:>8.1f} "
            f"{out.calls:>8} {out.failed:>7} {out.token_requests:>10} "
            f"{out.per_lifetime:>7.2f}"
        )


async def main(args: argparse.Namespace) -> int:
    # The proxy's log lines would drown the table; warnings still go to stderr.
    configure_logging(LogConfig(level="warning"), stream=io.StringIO())
    os.environ.setdefault(TOKEN_KEY_ENV, Fernet.generate_key().decode())
    scenarios = [
        Scenario(store, replicas)
        for store in ("memory", "redis")
        for replicas in args.replicas
    ]

    binary = args.redis_server or shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: Redis scenarios skipped", file=sys.stderr)
        scenarios = [s for s in scenarios if s.store == "memory"]
    port = free_port()
    redis = start_redis(binary, port) if binary else None
    try:
        outcomes = [
            await run_scenario(scenario, args, f"redis://127.0.0.1:{port}/0")
            for scenario in scenarios
        ]
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
    report(outcomes, args)
    return 1 if any(out.failed for out in outcomes) else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifetimes", type=int, default=4)
    # Whole seconds: the provider announces expires_in rounded up.
    parser.add_argument("--token-lifetime-s", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8, help="callers per replica")
    parser.add_argument(
        "--replicas",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 4],
        help="comma-separated replica counts (default 1,4)",
    )
    parser.add_argument("--redis-server", help="path to redis-server (default: PATH)")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
