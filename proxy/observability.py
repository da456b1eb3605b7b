"""Logging set-up, request ids and the redaction that keeps secrets out of logs.

Log lines are structlog key-value events with stable names (``request.completed``,
``token.refreshed``, ``token.refresh_failed``): JSON lines on stdout in production,
coloured columns for a person at a terminal. The request id is bound once per call
in a context variable, so every line a call causes carries it.

No code path logs a token or secret on purpose; ``redact_secret_fields`` is the net
under that rule for a field added carelessly later.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TextIO

import orjson
import structlog

from proxy.config import LogConfig

REDACTED = "[redacted]"
_SECRET_FIELDS = frozenset(
    {
        "authorization",
        "access_token",
        "token",
        "client_secret",
        "password",
        "api_key",
        "secret",
        "refresh_token",
        "id_token",
    }
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def redact_secret_fields(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name says it holds a secret."""
    for key in event:
        if key.lower() in _SECRET_FIELDS:
            event[key] = REDACTED
    return event


_second_shown: list[tuple[int, str]] = [(0, "")]


def add_timestamp(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``ts``: UTC ISO 8601 with microseconds, the seconds formatted once a second.

    structlog's own TimeStamper builds a datetime for every line, which costs more
    than the rest of the access line together.
    """
    now = time.time()
    second = int(now)
    shown_second, shown = _second_shown[0]
    if second != shown_second:
        shown = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_shown[0] = (second, shown)
    event["ts"] = f"{shown}.{int((now - second) * 1_000_000):06d}Z"
    return event


def _json_line(event: Any, **_options: Any) -> str:
    # orjson is several times faster than the json module; what it refuses (an
    # integer past 64 bits, a non-string key) falls back, so a log line never fails.
    try:
        return orjson.dumps(event, default=repr).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(event, default=repr)


def configure_logging(
    config: LogConfig, stream: TextIO | None = None, *, cache_loggers: bool = False
) -> None:
    """Route structlog events to ``stream`` (stdout by default) at ``config.level``.

    ``cache_loggers`` binds each module's logger once, on first use: cheaper per
    event, for a server that configures logging once; tests that reconfigure keep
    it off.
    """
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_timestamp,
        redact_secret_fields,
    ]
    if config.format == "console":
        colors = (stream or sys.stdout).isatty()
        processors.append(
            structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="ts")
        )
    else:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[config.level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=cache_loggers,
    )


class _MalformedRequestHandler(logging.Handler):
    """Turns aiohttp's parser-error records into one short structured line.

    aiohttp answers malformed HTTP itself, before any middleware, and logs the
    error with a traceback that quotes the offending bytes, which may hold a
    credential. Only the error's type reaches our log.
    """

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        structlog.get_logger("proxy.server").warning(
            "request.malformed",
            reason=type(error).__name__ if error is not None else "unknown",
        )


def _malformed_request_logger() -> logging.Logger:
    logger = logging.getLogger("proxy.aiohttp_server")
    logger.propagate = False
    logger.handlers[:] = [_MalformedRequestHandler()]
    return logger


MALFORMED_REQUEST_LOGGER = _malformed_request_logger()


@functools.lru_cache(maxsize=4096)
def parse_address(value: str | None) -> IPv4Address | IPv6Address | None:
    """An IP address from a peer or header string, cached: callers repeat."""
    try:
        return ip_address(value or "")
    except ValueError:
        return None


def request_id_from(header_value: str | None) -> str:
    """The caller's X-Request-ID when it is a safe token, else a fresh one.

    A caller-chosen id is echoed in logs and headers, so anything that could break a
    log line or a header (spaces, quotes, control characters, huge values) is
    replaced rather than passed on.
    """
    if header_value and _REQUEST_ID.fullmatch(header_value):
        return header_value
    return uuid.uuid4().hex
