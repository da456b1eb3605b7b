"""Running the proxy: the event loop, the listener, and ``--workers`` processes.

One worker is one process running the aiohttp app. With ``--workers N`` a small
supervisor starts N of them on the same port (``SO_REUSEPORT``: the kernel spreads
connections between them), each with its own token holders, and stops them together:

1. SIGTERM or SIGINT reaches the supervisor (and, from a terminal, the workers).
2. Each worker stops accepting, lets in-flight calls finish for up to
   ``server.shutdown_grace_s``, then cancels what is left (aiohttp's graceful
   shutdown).
3. A worker still alive after the grace period and a margin is killed.

A worker that dies on its own takes the others down and the supervisor exits 1, so
the container's orchestrator restarts the whole sidecar instead of serving on with
less capacity than configured.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from aiohttp import web

from proxy.app import create_app
from proxy.config import ConfigError, ProxyConfig
from proxy.metrics import MULTIPROC_ENV
from proxy.observability import configure_logging

_KILL_MARGIN_S = 5.0


def serve(config: ProxyConfig, *, reuse_port: bool = False) -> None:
    """Run one worker in this process until SIGTERM or SIGINT."""
    configure_logging(config.log, cache_loggers=True)
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        ssl_context=listener_tls(config),
        reuse_port=reuse_port,
        access_log=None,
        print=None,
        shutdown_timeout=config.server.shutdown_grace_s,
        loop=new_event_loop(),
    )


def serve_workers(config: ProxyConfig, count: int) -> int:
    """Run ``count`` workers on one port; returns the supervisor's exit code."""
    if config.server.port == 0:
        raise ConfigError([("server.port", "--workers needs a fixed port, not 0")])
    listener_tls(config)  # a bad certificate stops start-up here, not in N workers

    # Workers count into files here, so that any of them can answer /metrics for all.
    metrics_dir = tempfile.TemporaryDirectory(prefix="inventory-proxy-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir.name
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=serve,
            args=(config,),
            kwargs={"reuse_port": True},
            name=f"inventory-proxy-worker-{index}",
        )
        for index in range(count)
    ]
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {
        sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for worker in workers:
            worker.start()
        while not stopping and all(worker.is_alive() for worker in workers):
            wait([worker.sentinel for worker in workers], timeout=0.2)
        crashed = not stopping
    finally:
        _stop_all(workers, config.server.shutdown_grace_s + _KILL_MARGIN_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        del os.environ[MULTIPROC_ENV]
        metrics_dir.cleanup()
    if crashed:
        print("inventory-proxy: a worker exited; stopped the others", file=sys.stderr)
        return 1
    return 0


def _stop_all(workers: Sequence[BaseProcess], deadline_s: float) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(deadline_s)
        if worker.is_alive():
            worker.kill()
            worker.join()


def listener_tls(config: ProxyConfig) -> ssl.SSLContext | None:
    """TLS for the proxy's own port, for partner-facing deployments."""
    server = config.server
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [("server.tls_cert_file", f"cannot load the certificate and key: {exc}")]
        ) from None
    return context


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (a faster event loop), else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415 - optional, imported only where a loop is made
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
