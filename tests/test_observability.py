"""Logging set-up, request ids and the redaction net under the no-secrets rule."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from proxy.config import LogConfig
from proxy.observability import (
    REDACTED,
    add_timestamp,
    bind_request_id,
    configure_logging,
    redact_secret_fields,
    request_id_from,
)

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    """Leave structlog's global configuration as each test found it."""
    yield
    structlog.reset_defaults()
    bind_request_id(None)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    "field",
    [
        "authorization",
        "access_token",
        "token",
        "client_secret",
        "password",
        "api_key",
        "secret",
    ],
)
def test_secret_named_field_is_redacted(field: str) -> None:
    """A field whose name says it holds a secret loses its value."""
    event = {"event": "token.refreshed", field: "s3cr3t", "source": "iv"}

    redacted = redact_secret_fields(None, "info", event)

    assert redacted == {"event": "token.refreshed", field: REDACTED, "source": "iv"}


def test_ordinary_fields_pass_unredacted() -> None:
    """Fields that hold no secret keep their values."""
    event = {"event": "request.completed", "status": 200, "token_source": "iv"}

    redacted = redact_secret_fields(None, "info", dict(event))

    assert redacted == event


@pytest.mark.parametrize("field", ["Authorization", "CLIENT_SECRET"])
def test_secret_named_field_is_redacted_whatever_its_case(field: str) -> None:
    """A header-style capitalised secret field is redacted like its lowercase name."""
    event = {"event": "upstream.token_rejected", field: "Bearer s3cr3t"}

    redacted = redact_secret_fields(None, "warning", event)

    assert redacted[field] == REDACTED


@pytest.mark.parametrize(
    "caller_id",
    ["abc-123", "req_1.2:3", "A" * 128, "0f8fad5b-d9cb-469f-a165-70867728950e"],
)
def test_safe_caller_request_id_is_kept(caller_id: str) -> None:
    """A caller's id made of safe characters and at most 128 long is echoed."""
    request_id = request_id_from(caller_id)

    assert request_id == caller_id


@pytest.mark.parametrize(
    "caller_id",
    [
        None,
        "",
        "two words",
        'say"hi"',
        "it's",
        "line\r\nX-Injected: 1",
        "trailing\n",
        "tab\there",
        "A" * 129,
        "caf\u00e9",
        "<script>",
    ],
)
def test_unsafe_caller_request_id_is_replaced(caller_id: str | None) -> None:
    """An id that could break a log line or header is replaced by 32 hex digits."""
    request_id = request_id_from(caller_id)

    assert HEX_ID.fullmatch(request_id)
    assert request_id != caller_id


def test_generated_request_ids_differ() -> None:
    """Each replaced id is fresh, so two calls never share one."""
    first = request_id_from(None)

    second = request_id_from(None)

    assert first != second


def test_json_logging_writes_event_level_and_timestamp() -> None:
    """Each event is one JSON line with ``event``, ``level``, ``ts`` and its fields."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="info", format="json"), stream=stream)

    structlog.get_logger("test").info("request.completed", status=200)

    [line] = json_lines(stream)
    assert line["event"] == "request.completed"
    assert line["level"] == "info"
    assert line["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["ts"])


def test_json_logging_respects_the_level() -> None:
    """At info, debug events are dropped and warnings are kept."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="info", format="json"), stream=stream)
    log = structlog.get_logger("test")

    log.debug("token.cache_hit")
    log.info("request.completed")
    log.warning("token.refresh_failed")

    events = [(line["event"], line["level"]) for line in json_lines(stream)]
    assert events == [
        ("request.completed", "info"),
        ("token.refresh_failed", "warning"),
    ]


def test_debug_level_keeps_debug_events() -> None:
    """At debug, debug events are written."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="debug", format="json"), stream=stream)

    structlog.get_logger("test").debug("token.cache_hit")

    assert [line["event"] for line in json_lines(stream)] == ["token.cache_hit"]


def test_logged_secret_fields_are_redacted() -> None:
    """The configured pipeline runs the redaction before rendering."""
    stream = io.StringIO()
    configure_logging(LogConfig(format="json"), stream=stream)

    structlog.get_logger("test").info("oops", access_token="eyJ-secret")

    assert "eyJ-secret" not in stream.getvalue()
    assert json_lines(stream)[0]["access_token"] == REDACTED


def test_bound_request_id_reaches_every_line() -> None:
    """A request id bound in the context appears on the lines logged under it."""
    stream = io.StringIO()
    configure_logging(LogConfig(format="json"), stream=stream)
    log = structlog.get_logger("test")

    bind_request_id("req-7")
    log.info("token.refreshed")
    log.info("request.completed")
    bind_request_id(None)
    log.info("proxy.stopped")

    ids = [line.get("request_id") for line in json_lines(stream)]
    assert ids == ["req-7", "req-7", None]


def test_console_format_writes_readable_lines() -> None:
    """The console format writes one uncoloured line per event with its fields."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="info", format="console"), stream=stream)

    structlog.get_logger("test").info("request.completed", status=200)

    [line] = stream.getvalue().splitlines()
    assert "request.completed" in line
    assert "info" in line
    assert "status=200" in line
    assert "\x1b[" not in line


def test_timestamps_are_utc_iso_8601_with_microseconds() -> None:
    """ts reads like 2026-12-03T18:34:42.138049Z, and moves with the clock."""
    first = add_timestamp(None, "info", {})["ts"]
    second = add_timestamp(None, "info", {})["ts"]

    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(pattern, first)
    assert second >= first


def test_values_json_cannot_hold_still_make_a_line() -> None:
    """A field orjson refuses (an integer past 64 bits) falls back, never fails."""
    stream = io.StringIO()
    configure_logging(LogConfig(), stream=stream)

    structlog.get_logger("t").info("big", n=2**70)

    assert json.loads(stream.getvalue())["n"] == 2**70
