"""The targets under load, how each starts, and why one may be skipped.

    direct        the backend itself, with a fixed valid token
    passthrough   bench/passthrough.py, a bare aiohttp forwarder with a fixed token
    passthrough-pool  the same, sending through the proxy's UpstreamPool
    proxy         inventory-proxy serve, one worker, default (info) logging
    control       a second pass-through, started and loaded like the first
    proxy-2w      inventory-proxy serve --workers 2
    nginx         nginx with a fixed Authorization header and a keep-alive pool
    proxy-shared  one worker with share_identical and cache_ttl_s on the upstream

A target that cannot run here (nginx not installed, a CLI without ``--workers``, a
config the proxy refuses) is skipped with a reason instead of failing the bench.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backend import (
    FIXED_CLIENT_ID,
    FIXED_TOKEN_PATH,
    PROXY_CLIENT_ID,
    PROXY_TOKEN_PATH,
    STATS_PATH,
)
from processes import Child, Children, free_port, get_json, wait_until_ok

TARGETS = (
    "direct",
    "passthrough",
    "proxy",
    "control",
    "passthrough-pool",
    "proxy-2w",
    "nginx",
    "proxy-shared",
)
# Copies of the baseline: their ratio to it is what noise alone makes of a ratio.
CONTROLS = frozenset({"control"})
# How each bench/passthrough.py target sends upstream (its --client).
PASSTHROUGH_CLIENTS = {
    "passthrough": "session",
    "control": "session",
    "passthrough-pool": "pool",
}
PROXY_WORKERS = {"proxy": 1, "proxy-2w": 2, "proxy-shared": 1}
ONLY_WORKLOADS = {"proxy-shared": frozenset({"hot"})}
SHARED_SETTINGS = 'share_identical = ["POST /*/v1/availability/*"]\ncache_ttl_s = 1.0\n'
BENCH_DIR = Path(__file__).resolve().parent
STARTUP_TIMEOUT_S = 30.0
_SHUTDOWN_GRACE_S = 2


@dataclass(frozen=True)
class BenchContext:
    """What every target needs: where the backend is and how to authenticate."""

    backend_port: int
    fixed_authorization: str
    proxy_client_secret: str
    token_lifetime_s: float
    nginx_workers: int
    work_dir: Path

    @property
    def backend_url(self) -> str:
        """The backend's origin."""
        return f"http://127.0.0.1:{self.backend_port}"


@dataclass(frozen=True)
class RunningTarget:
    """A started target: where to send load, and its process if it has one.

    ``authorization`` is what the load itself must carry: only the direct target,
    which has no one in front of it to add a token, needs one.
    """

    name: str
    port: int
    child: Child | None
    authorization: str | None = None

    @property
    def url(self) -> str:
        """The target's origin."""
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class BackendCounters:
    """The backend's counters at one moment; subtract two to cover a run."""

    token_requests: int
    upstream_calls: int

    def __sub__(self, earlier: BackendCounters) -> BackendCounters:
        return BackendCounters(
            self.token_requests - earlier.token_requests,
            self.upstream_calls - earlier.upstream_calls,
        )


def start_backend(
    children: Children, work_dir: Path, *, token_lifetime_s: float, nginx_workers: int
) -> BenchContext:
    """Start the backend, wait for it, and fetch the fixed token once."""
    port = free_port()
    proxy_secret = secrets.token_urlsafe(24)
    fixed_secret = secrets.token_urlsafe(24)
    argv = [sys.executable, str(BENCH_DIR / "backend.py"), "--port", str(port)]
    argv += ["--token-lifetime-s", str(token_lifetime_s)]
    env = _env(
        BENCH_IV_CLIENT_SECRET=proxy_secret, BENCH_FIXED_CLIENT_SECRET=fixed_secret
    )
    child = children.start("backend", argv, env)
    wait_until_ok(child, port, STATS_PATH, STARTUP_TIMEOUT_S)

    token = _client_credentials_token(port, FIXED_CLIENT_ID, fixed_secret)
    return BenchContext(
        backend_port=port,
        fixed_authorization=f"Bearer {token}",
        proxy_client_secret=proxy_secret,
        token_lifetime_s=token_lifetime_s,
        nginx_workers=nginx_workers,
        work_dir=work_dir,
    )


def backend_counters(context: BenchContext) -> BackendCounters:
    """Read the backend's counters."""
    stats = get_json(context.backend_port, STATS_PATH)
    return BackendCounters(stats["token_requests"], stats["upstream_calls"])


def _client_credentials_token(port: int, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            FIXED_TOKEN_PATH,
            body="grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"the bench's token request answered {answer.status}")
    token: str = json.loads(body)["access_token"]
    return token


def skip_reason(name: str, context: BenchContext) -> str | None:
    """Why ``name`` cannot run on this machine and code, or None when it can."""
    if name == "nginx" and shutil.which("nginx") is None:
        return "nginx is not installed"
    if name == "proxy-2w":
        usage = _proxy_output(["serve", "--help"]).stdout
        if "--workers" not in usage:
            return "inventory-proxy serve has no --workers option"
    if name == "proxy-shared":
        config = write_proxy_config(context, name, port=free_port())
        checked = _proxy_output(["check-config", "--config", str(config)])
        if checked.returncode != 0:
            refusal = (checked.stderr or checked.stdout).strip().splitlines()
            lines = [line.strip() for line in refusal]
            return f"check-config refuses the sharing settings: {'; '.join(lines)}"
    return None


@contextmanager
def started(
    name: str,
    context: BenchContext,
    children: Children,
    *,
    wrapper: Sequence[str] = (),
    python_path: str | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[RunningTarget]:
    """Start ``name``, wait until it answers, and stop it when the block ends.

    ``wrapper`` goes in front of the target's command (a profiler, say), and
    ``python_path`` goes first on the target's ``PYTHONPATH``, so that an edited copy
    of ``proxy/`` can be measured without installing it.
    """
    if name == "direct":
        yield RunningTarget(
            name, context.backend_port, None, context.fixed_authorization
        )
        return

    port = free_port()
    if name in PASSTHROUGH_CLIENTS:
        argv = [sys.executable, str(BENCH_DIR / "passthrough.py"), "--port", str(port)]
        argv += ["--upstream", context.backend_url]
        argv += ["--client", PASSTHROUGH_CLIENTS[name]]
        env = _env(BENCH_AUTHORIZATION=context.fixed_authorization)
        ready_path = STATS_PATH
    elif name == "nginx":
        argv = _nginx_argv(write_nginx_config(context, port))
        env, ready_path = None, STATS_PATH
    else:
        config = write_proxy_config(context, name, port)
        argv = [*_proxy_command(), "serve", "--config", str(config)]
        if PROXY_WORKERS[name] > 1:
            argv += ["--workers", str(PROXY_WORKERS[name])]
        env = _env(BENCH_IV_CLIENT_SECRET=context.proxy_client_secret)
        ready_path = "/readyz"

    if python_path is not None:
        env = dict(env if env is not None else os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (python_path, env.get("PYTHONPATH")) if path
        )
    child = children.start(name, [*wrapper, *argv], env)
    try:
        wait_until_ok(child, port, ready_path, startup_timeout_s)
        yield RunningTarget(name, port, child)
    finally:
        children.stop(child)


def write_proxy_config(context: BenchContext, name: str, port: int) -> Path:
    """The proxy's TOML for target ``name``: default info logging, as in production."""
    margin_s = refresh_margin_s(context.token_lifetime_s)
    shared = SHARED_SETTINGS if name == "proxy-shared" else ""
    path = context.work_dir / f"{name}.toml"
    path.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace_s = {_SHUTDOWN_GRACE_S}

[log]
level = "info"
format = "json"

[token_sources.iv]
token_url = "{context.backend_url}{PROXY_TOKEN_PATH}"
client_id = "{PROXY_CLIENT_ID}"
client_secret = "${{BENCH_IV_CLIENT_SECRET}}"
auth_method = "client_secret_basic"
refresh_margin_s = {margin_s:g}

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "{context.backend_url}/inventory"
token_source = "iv"
{shared}""",
        encoding="utf-8",
    )
    return path


def refresh_margin_s(token_lifetime_s: float) -> float:
    """How long before expiry the bench's proxy renews: a tenth of the lifetime.

    At most the proxy's default of 30 s, and always short of the half-lifetime floor
    the proxy applies, so that short bench lifetimes cost one token request each,
    per worker.
    """
    return min(30.0, token_lifetime_s / 10)


def write_nginx_config(context: BenchContext, port: int) -> Path:
    """nginx as a plain authenticating proxy: fixed header, keep-alive both ways."""
    root = context.work_dir / "nginx"
    root.mkdir(exist_ok=True)
    path = root / "nginx.conf"
    path.write_text(
        f"""\
daemon off;
worker_processes {context.nginx_workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{context.backend_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "{context.fixed_authorization}";
        }}
    }}
}}
""",
        encoding="utf-8",
    )
    return path


def _nginx_argv(config: Path) -> list[str]:
    nginx = shutil.which("nginx") or "nginx"
    prefix = config.parent
    return [
        nginx,
        "-p",
        str(prefix),
        "-e",
        str(prefix / "error.log"),
        "-c",
        str(config),
    ]


def _proxy_command() -> list[str]:
    script = Path(sys.executable).with_name("inventory-proxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


def _proxy_output(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv built here, no shell
        [*_proxy_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
        # check-config needs the variable set; it never contacts the provider.
        env=_env(BENCH_IV_CLIENT_SECRET="check-config-only"),  # noqa: S106
    )


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
