"""The ``inventory-proxy`` command: serve, check-config and demo.

Exit codes: 0 success, 2 a configuration that cannot run (the message names the
key), 1 anything else. Nothing here prints a secret: summaries show where tokens
come from, never what they are.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from proxy.config import ConfigError, ProxyConfig, load_config
from proxy.demo.runner import run_demo, run_demo_backend
from proxy.jwt_claims import decode_jwt_parts
from proxy.server import serve, serve_workers
from proxy.source_config import OAuth2SourceConfig, StaticSourceConfig
from proxy.token_sources import ClientCredentialsSource
from proxy.tokens import TokenFetchError, TokenGrant

CONFIG_ENV = "INVENTORY_PROXY_CONFIG"
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"inventory-proxy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inventory-proxy",
        description="Authenticating reverse proxy for an OMS's inventory calls.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve_command = commands.add_parser("serve", help="run the proxy")
    _add_config_option(serve_command)
    serve_command.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port, each with its own token holders (1)",
    )
    serve_command.set_defaults(run=_serve)

    check = commands.add_parser(
        "check-config", help="validate a config file and summarise it"
    )
    _add_config_option(check)
    check.set_defaults(run=_check_config)

    token = commands.add_parser(
        "token",
        help="fetch one token from a source and describe it (never printing it)",
    )
    token.add_argument("source", help="the [token_sources] name")
    _add_config_option(token)
    token.set_defaults(run=_token)

    new_key = commands.add_parser(
        "new-api-key", help="make a partner API key and print it with its digest"
    )
    new_key.add_argument(
        "--client", default="PARTNER", help="the [clients] name to print (PARTNER)"
    )
    new_key.set_defaults(run=_new_api_key)

    demo = commands.add_parser(
        "demo", help="run the proxy in front of an embedded demo identity provider"
    )
    demo.add_argument("--port", type=int, default=8080, help="proxy port (8080)")
    demo.set_defaults(run=_demo)

    backend = commands.add_parser(
        "demo-backend",
        help="run only the demo's token endpoints and upstreams (credentials from "
        "DEMO_IV_CLIENT_ID/_SECRET and DEMO_PRICING_CLIENT_ID/_SECRET)",
    )
    backend.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    backend.add_argument("--port", type=int, default=9400, help="port (9400)")
    backend.set_defaults(run=_demo_backend)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV),
        help=f"the TOML config file (default: ${CONFIG_ENV})",
    )


def _load(args: argparse.Namespace) -> ProxyConfig:
    if args.config is None:
        raise ConfigError([("", f"no config file: pass --config or set {CONFIG_ENV}")])
    return load_config(args.config)


def _serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.workers < 1:
        raise ConfigError([("--workers", "must be at least 1")])
    if args.workers > 1:
        return serve_workers(config, args.workers)
    serve(config)
    return 0


def _new_api_key(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"API key (give it to the partner once; it is not stored): {key}")
    print(f"SHA-256 digest: {digest}")
    print()
    print("Add to the proxy's config, with the grants the partner needs:")
    print()
    print(f"[clients.{args.client}]")
    print(f'api_key_sha256 = ["{digest}"]')
    print('allow = ["inventory:POST"]')
    print("rate_per_s = 20")
    print("burst = 40")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"{args.config}: ok, {len(config.upstreams)} upstream(s)")
    for line in summarise(config):
        print(f"  {line}")
    return 0


def summarise(config: ProxyConfig) -> list[str]:
    """One line per upstream: where it is served, where it goes, whose token."""
    lines = []
    for name, upstream in config.upstreams.items():
        source = config.token_sources[upstream.token_source]
        if isinstance(source, StaticSourceConfig):
            credential = "a static credential"
        else:
            credential = (
                f"{source.auth_method} as {source.client_id!r} at {source.token_url}"
            )
        extras = ""
        if upstream.auth_header.lower() != "authorization":
            extras += f", sent as {upstream.auth_header}"
        if upstream.stand_in_token_path:
            extras += f", stand-in tokens at {upstream.stand_in_token_path}"
        lines.append(
            f"{name}: {upstream.path_prefix} -> {upstream.base_url} "
            f"(token {upstream.token_source}: {credential}{extras}, "
            f"timeout {upstream.timeout_s:g}s)"
        )
    return lines


def _token(args: argparse.Namespace) -> int:
    config = _load(args)
    source = config.token_sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(config.token_sources)) or "none"
        raise ConfigError(
            [(f"token_sources.{args.source}", f"is not configured (known: {known})")]
        )
    if isinstance(source, StaticSourceConfig):
        print(f"{args.source}: a static credential; there is nothing to fetch")
        return 0
    try:
        grant = asyncio.run(_fetch_once(source))
    except TokenFetchError as exc:
        print(f"{args.source}: {exc.reason}", file=sys.stderr)
        return 1
    for line in describe_grant(args.source, source, grant):
        print(line)
    return 0


async def _fetch_once(source: OAuth2SourceConfig) -> TokenGrant:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await ClientCredentialsSource(source, session).fetch_token()


def describe_grant(
    name: str, source: OAuth2SourceConfig, grant: TokenGrant
) -> list[str]:
    """What an operator needs to debug a provider; the token itself never appears."""
    lifetime = (
        f"{grant.expires_in_s:g} s" if grant.expires_in_s is not None else "not given"
    )
    lines = [
        f"source:      {name} ({source.auth_method} as {source.client_id!r})",
        f"token_url:   {source.token_url}",
        f"token_type:  {grant.token_type}",
        f"expires_in:  {lifetime}",
        f"scope:       {grant.scope or 'not given'}",
        f"length:      {len(grant.value)} characters",
    ]
    header, claims = decode_jwt_parts(grant.value)
    if claims is None:
        lines.append("format:      opaque (not a JWT)")
        return lines
    lines.append("format:      JWT (claims shown unverified; signature not shown)")
    lines.append(f"header:      {json.dumps(header, sort_keys=True)}")
    for claim, value in sorted(claims.items()):
        shown = json.dumps(value)
        if claim in ("exp", "iat", "nbf") and isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
            shown = f"{value} ({moment})"
        lines.append(f"claim {claim}: {shown}")
    return lines


def _demo_backend(args: argparse.Namespace) -> int:
    return run_demo_backend(args.host, args.port)


def _demo(args: argparse.Namespace) -> int:
    return run_demo(port=args.port)
