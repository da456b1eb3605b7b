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
import gc
import multiprocessing
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType, TracebackType
from typing import Any, Self

from aiohttp import web

from proxy.app import Proxy
from proxy.config import ConfigError, ProxyConfig
from proxy.http_server import ProxyHttpServer
from proxy.metrics import MULTIPROC_ENV
from proxy.observability import configure_logging

_KILL_MARGIN_S = 5.0
GC_THRESHOLDS = (10_000, 10, 10)


class ProxyServer:
    """A ``Proxy`` behind aiohttp's low-level server, listening on one address.

    ``start`` opens the proxy and then the listener; ``stop`` closes the listener,
    lets calls in flight finish for up to ``server.shutdown_grace_s`` (cancelling
    what is left), and then closes the proxy. ``port`` 0 picks a free port, which
    ``port`` reports once started.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        port: int | None = None,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._port = config.server.port if port is None else port
        self._reuse_port = reuse_port
        self._ssl_context = ssl_context
        self._runner: web.ServerRunner | None = None
        self.proxy: Proxy | None = None

    async def start(self) -> None:
        """Open the proxy and listen; on a listener error nothing stays open."""
        self.proxy = await Proxy.open(self.config)
        runner = web.ServerRunner(
            ProxyHttpServer(self.proxy.handle),
            shutdown_timeout=self.config.server.shutdown_grace_s,
        )
        self._runner = runner
        try:
            await runner.setup()
            site = web.TCPSite(
                runner,
                self.config.server.host,
                self._port,
                ssl_context=self._ssl_context,
                reuse_port=self._reuse_port,
            )
            await site.start()
        except BaseException:
            await self.stop()
            raise

    @property
    def port(self) -> int:
        """The port listened on."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the server is not listening")
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        """Drain and close the listener, then the proxy."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.proxy is not None:
            await self.proxy.close()
            self.proxy = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def serve(config: ProxyConfig, *, reuse_port: bool = False) -> None:
    """Run one worker in this process until SIGTERM or SIGINT."""
    configure_logging(config.log, cache_loggers=True)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_until_stopped(config, reuse_port))
    finally:
        _close_loop(loop)


async def _serve_until_stopped(config: ProxyConfig, reuse_port: bool) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    server = ProxyServer(
        config, reuse_port=reuse_port, ssl_context=listener_tls(config)
    )
    async with server:
        tune_garbage_collection()
        await stopping.wait()


def tune_garbage_collection() -> None:
    """Make the cyclic garbage collector cheap for a server that has started.

    Everything alive after start-up (modules, config, clients) lives as long as the
    process, so ``gc.freeze`` takes it out of every later collection. Calls in
    flight allocate objects that live for milliseconds; with CPython's default
    first threshold (700) many of them are promoted to older generations, which
    makes the full collections that follow more frequent and longer. A larger
    first threshold lets them die young, for the price of a few thousand objects
    waiting a little longer to be collected.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still running, as ``asyncio.run`` does, and close."""
    remaining = asyncio.all_tasks(loop)
    for task in remaining:
        task.cancel()
    outcome: Any = asyncio.gather(*remaining, return_exceptions=True)
    loop.run_until_complete(outcome)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


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
