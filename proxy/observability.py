"""Logging set-up, request ids and the redaction that keeps secrets out of logs.

Log lines are structlog key-value events with stable names (``request.completed``,
``token.refreshed``, ``token.refresh_failed``): JSON lines on stdout in production,
coloured columns for a person at a terminal. The request id is bound once per call
in a context variable, so every line a call causes carries it.

``request.completed`` is written for every call, so it skips the general pipeline:
``log_call_completed`` renders its fixed fields straight to JSON (or hands them to
structlog for the console format), and all lines reach the stream through one
``LineSink`` that writes once per turn of the event loop.

No code path logs a token or secret on purpose; ``redact_secret_fields`` is the net
under that rule for a field added carelessly later.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TextIO

import orjson
import structlog

from proxy.config import LogConfig
from proxy.log_sink import LineSink, SinkLogger

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
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def timestamp() -> str:
    """UTC ISO 8601 with microseconds, the seconds formatted once a second.

    structlog's own TimeStamper builds a datetime for every line, which costs more
    than the rest of the access line together.
    """
    now = time.time()
    second = int(now)
    shown_second, shown = _second_shown[0]
    if second != shown_second:
        shown = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_shown[0] = (second, shown)
    return f"{shown}.{int((now - second) * 1_000_000):06d}Z"


def add_timestamp(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``ts``, from ``timestamp``."""
    event["ts"] = timestamp()
    return event


def bind_request_id(request_id: str | None) -> None:
    """Mark every line logged from here on in this context with ``request_id``."""
    _request_id.set(request_id)


def add_request_id(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``request_id`` of the call being handled, when there is one."""
    request_id = _request_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _json_line(event: Any, **_options: Any) -> str:
    # orjson is several times faster than the json module; what it refuses (an
    # integer past 64 bits, a non-string key) falls back, so a log line never fails.
    try:
        return orjson.dumps(event, default=repr).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(event, default=repr)


@dataclass(slots=True)
class _Output:
    """What ``configure_logging`` chose, read on every ``request.completed``."""

    sink: LineSink
    calls_logged: bool = True
    calls_as_json: bool = True


_output = _Output(LineSink(sys.stdout))


def flush_logs() -> None:
    """Write out the lines still waiting for the end of this loop turn."""
    _output.sink.flush()


atexit.register(flush_logs)


def configure_logging(
    config: LogConfig, stream: TextIO | None = None, *, cache_loggers: bool = False
) -> None:
    """Route structlog events to ``stream`` (stdout by default) at ``config.level``.

    ``cache_loggers`` binds each module's logger once, on first use: cheaper per
    event, for a server that configures logging once; tests that reconfigure keep
    it off.
    """
    flush_logs()
    sink = LineSink(stream or sys.stdout)
    _output.sink = sink
    _output.calls_logged = config.level in ("debug", "info")
    _output.calls_as_json = config.format == "json"
    processors: list[structlog.typing.Processor] = [
        add_request_id,
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
        logger_factory=lambda *_args: SinkLogger(sink),
        cache_logger_on_first_use=cache_loggers,
    )


@dataclass(slots=True)
class CallRecord:
    """One call's facts, gathered on its way for its answer and its access line."""

    request_id: str
    upstream: str | None = None
    client: str | None = None
    replayed: bool = False
    sharing: str | None = None


def log_call_completed(
    record: CallRecord, method: str, path: str, status: int, duration_s: float
) -> None:
    """The ``request.completed`` line: the same fields and order as any other line.

    Its fields are fixed and hold no secret, so the JSON line is rendered here
    directly; structlog's pipeline would cost more than the rest of the call's own
    work. The console format goes through structlog as usual.
    """
    if not _output.calls_logged:
        return
    fields = {
        "upstream": record.upstream,
        "client": record.client,
        "method": method,
        "path": path,
        "status": status,
        # Hundredths of a millisecond, truncated: round() costs more than the rest.
        "duration_ms": int(duration_s * 100_000) / 100,
        "replayed": record.replayed,
        "sharing": record.sharing,
    }
    if not _output.calls_as_json:
        structlog.get_logger("proxy.app").info("request.completed", **fields)
        return
    fields["event"] = "request.completed"
    fields["request_id"] = record.request_id
    fields["level"] = "info"
    fields["ts"] = timestamp()
    _output.sink.write(_json_line(fields))


class _MalformedRequestHandler(logging.Handler):
    """Turns aiohttp's parser-error records into one short structured line.

    aiohttp refuses malformed HTTP before the handler runs, and logs the error with
    a traceback that quotes the offending bytes, which may hold a credential. Only
    the error's type reaches our log.
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


class _RandomIds:
    """128-bit random ids as 32 hex digits, drawn from the OS 4 KiB at a time.

    One ``os.urandom`` call per id is a system call per request; a pool of 256 ids
    costs one per 256 requests and is just as unpredictable. A forked child starts
    with an empty pool, so it never repeats its parent's ids.
    """

    _ID_BYTES = 16
    _POOL_BYTES = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def next(self) -> str:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(self._POOL_BYTES)
            self._offset = 0
        start = self._offset
        self._offset = start + self._ID_BYTES
        return self._pool[start : self._offset].hex()

    def forget(self) -> None:
        self._pool = b""
        self._offset = 0


_random_ids = _RandomIds()
os.register_at_fork(after_in_child=_random_ids.forget)


def request_id_from(header_value: str | None) -> str:
    """The caller's X-Request-ID when it is a safe token, else a fresh one.

    A caller-chosen id is echoed in logs and headers, so anything that could break a
    log line or a header (spaces, quotes, control characters, huge values) is
    replaced rather than passed on.
    """
    if header_value and _REQUEST_ID.fullmatch(header_value):
        return header_value
    return _random_ids.next()
