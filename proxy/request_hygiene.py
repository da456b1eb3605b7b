"""What a request must look like before the proxy sends it anywhere.

The proxy faces partners, so nothing a caller sends may steer a call away from the
configured upstreams, and nothing that two HTTP implementations could read two ways
may be passed on. The checks here only ever refuse; they never rewrite, so a request
that passes reaches its upstream with the path and query bytes exactly as sent.

The request target (RFC 9112 §3.2) must be in origin-form, ``/path?query``.
Absolute-form (§3.2.2) and authority-form with ``CONNECT`` (§3.2.3) are how a
client asks a forward proxy to reach another host, and asterisk-form (§3.2.4) names
no resource; the proxy serves none of them. The path must stay below the
upstream's base path under every reading an upstream, or a server in front of it,
might apply: percent-decoded (repeatedly, to catch ``%252e%252e``), with ``\\``
read as ``/`` and ``;params`` cut off each segment, and compatibility-normalised
(UAX #15), no segment may be ``.`` or ``..`` (RFC 3986 §5.2.4) and none may hold a
control character.

Empty segments (``//``) are refused too, except a final one (a trailing slash).
Servers disagree about them: some merge ``a//b`` into ``a/b``, which moves a later
``..`` one level up, and a path that starts with ``//`` reads as a network-path
reference naming another host (RFC 3986 §4.2) to a framework that resolves it
against a URL, the usual start of an open redirect. No upstream API needs an empty
segment in the middle of a path, so refusing them is cheaper than reasoning about
every upstream's normaliser.

The query belongs to the upstream and is only checked for characters a
request-target cannot hold.

Message framing is mostly aiohttp's: both its parsers (llhttp and the pure-Python
fallback) refuse Content-Length with Transfer-Encoding, repeated or non-numeric
Content-Length, malformed chunk sizes, obs-fold (RFC 9112 §5.2), whitespace before a
header colon (§5.1) and bare LF line ends (§2.2), before the proxy's handler runs
(``proxy.http_server`` answers those with the JSON 400). ``check_message_framing``
adds what both let through: a Transfer-Encoding other than exactly ``chunked`` (RFC
9112 §6.1), such as ``gzip, chunked``, whose gzip layer aiohttp never removes and
the forwarder would pass on as if there were none, a Transfer-Encoding on an
HTTP/1.0 request (§6.1: the framing is faulty), and any
version other than HTTP/1.0 and HTTP/1.1. Since the forwarder reads the whole body
and sends it upstream with its own Content-Length, a request that aiohttp frames
one way cannot reach an upstream framed another way.

``SERVER_LIMITS`` bounds the request line and headers; a request over them gets a
400 from the parser, never 431.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote

from multidict import MultiMapping

from proxy.errors import BadRequest

# aiohttp's own names, passed to web.Application(handler_args=...). The line limit
# bounds the request line (llhttp counts the target alone), the field limit one
# header's name and value together; Apache's defaults are close (8190, 100 fields).
SERVER_LIMITS: Final[Mapping[str, int]] = {
    "max_line_size": 8192,
    "max_field_size": 8192,
    "max_headers": 100,
}

# Three decodings unwrap whatever a legitimate caller sends and the double encoding
# attacks use; a path still encoded after that is refused, not decoded further.
MAX_PERCENT_DECODINGS: Final = 3

_SUPPORTED_VERSIONS: Final = frozenset({(1, 0), (1, 1)})
_DOT_SEGMENTS: Final = frozenset({".", ".."})
_PERCENT_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_MALFORMED_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SHOWN_CHARS: Final = 80
# Fast paths for the common case, decided without decoding anything: printable
# ASCII without space or '#'; and paths whose every segment is non-empty, starts
# with no dot and holds no '%', ';' or backslash, which no decoding can change.
_TARGET_CHARACTERS: Final = re.compile(r"[!\x22$-~]*")
_PLAIN_PATH: Final = re.compile(
    r"(?:/[\w~!$&'()*+,=:@-][\w.~!$&'()*+,=:@-]*)*/?", re.ASCII
)
# Both at once, for a whole target that starts with "/": a plain path, then any
# plain query.
_PLAIN_TARGET: Final = re.compile(
    r"(?:/[\w~!$&'()*+,=:@-][\w.~!$&'()*+,=:@-]*)*/?(?:\?[!\x22$-~]*)?", re.ASCII
)


def check_request_target(method: str, raw_target: str) -> None:
    """Refuse any target but an origin-form one that stays below its base path.

    ``raw_target`` is the request-target as received, still percent-encoded.
    Raises ``BadRequest`` whose detail names what is wrong.
    """
    plain = raw_target[:1] == "/" and _PLAIN_TARGET.fullmatch(raw_target)
    if plain and method != "CONNECT":
        return
    if method == "CONNECT":
        raise BadRequest(
            "CONNECT is not served: this proxy forwards to its configured "
            "upstreams only and opens no tunnels (RFC 9112 section 3.2.3)"
        )

    raw_path, _, raw_query = raw_target.partition("?")
    check_origin_form(raw_path, raw_query)


def check_origin_form(raw_path: str, raw_query: str) -> None:
    """Refuse a path and query that are not a safe origin-form target.

    The checks of ``check_request_target`` that need no method, for callers that
    hold the target already split at its first ``?``.
    """
    if not (
        _TARGET_CHARACTERS.fullmatch(raw_path)
        and _TARGET_CHARACTERS.fullmatch(raw_query)
    ):
        _check_characters(raw_path + raw_query)
    if not raw_path.startswith("/"):
        raise BadRequest(
            f"the request target {_shown(raw_path)} is not a path: only "
            "origin-form targets like /inventory/items?sku=1 are served, not "
            "absolute-form, authority-form or '*' (RFC 9112 section 3.2)"
        )
    check_path(raw_path)


def check_path(raw_path: str) -> None:
    """Refuse a raw path that could leave its base path under any decoding."""
    if _PLAIN_PATH.fullmatch(raw_path):
        return
    if _MALFORMED_ESCAPE.search(raw_path):
        raise BadRequest(
            f"the path {_shown(raw_path)} has a '%' that does not start a "
            "percent-encoded octet; write a literal '%' as %25 (RFC 3986 section 2.1)"
        )

    decoded = _fully_decoded(raw_path)
    controls = [char for char in decoded if unicodedata.category(char) == "Cc"]
    if controls:
        raise BadRequest(
            f"the path holds the control character {controls[0]!a} once "
            "percent-decoded; control characters are never part of a path"
        )

    segments = decoded.replace("\\", "/").split("/")[1:]
    for index, segment in enumerate(segments):
        _check_segment(segment, is_last=index == len(segments) - 1)


def check_message_framing(version: tuple[int, int], headers: MultiMapping[str]) -> None:
    """Refuse a request whose version or body framing is not plainly HTTP/1.x.

    ``headers`` are the request's parsed headers; aiohttp has already refused the
    shapes it cannot frame, and this refuses what it frames by guessing.
    """
    if version not in _SUPPORTED_VERSIONS:
        major, minor = version
        raise BadRequest(
            f"HTTP/{major}.{minor} is not served; send HTTP/1.1 (RFC 9112 section 2.3)"
        )

    codings = headers.getall("Transfer-Encoding", [])
    lengths = headers.getall("Content-Length", [])
    if codings and version < (1, 1):
        raise BadRequest(
            "an HTTP/1.0 request cannot carry Transfer-Encoding; send HTTP/1.1 "
            "or a Content-Length (RFC 9112 section 6.1)"
        )
    if codings and lengths:
        raise BadRequest(
            "a request cannot carry both Transfer-Encoding and Content-Length "
            "(RFC 9112 section 6.1)"
        )
    if codings and not _is_only_chunked(codings):
        raise BadRequest(
            f"Transfer-Encoding {_shown(', '.join(codings))} is not served; the "
            "only transfer coding accepted is 'chunked' (RFC 9112 section 6.1)"
        )
    if len(lengths) > 1 or (lengths and not _is_decimal(lengths[0])):
        raise BadRequest(
            f"Content-Length {_shown(', '.join(lengths))} is not one decimal "
            "number (RFC 9112 section 6.3)"
        )


def _check_characters(raw_target: str) -> None:
    for char in raw_target:
        if char == "#":
            raise BadRequest(
                "the request target holds a fragment ('#'), which clients never "
                "send; percent-encode a literal '#' as %23 (RFC 9112 section 3.2.1)"
            )
        if not char.isascii() or not char.isprintable() or char == " ":
            raise BadRequest(
                f"the request target holds {char!a}, which a URI cannot hold "
                "unencoded; percent-encode it (RFC 3986 section 2)"
            )


def _fully_decoded(raw_path: str) -> str:
    decoded = raw_path
    for _ in range(MAX_PERCENT_DECODINGS):
        decoded = unquote(decoded, errors="surrogateescape")
    if _PERCENT_ESCAPE.search(decoded):
        raise BadRequest(
            f"the path {_shown(raw_path)} is percent-encoded more than "
            f"{MAX_PERCENT_DECODINGS} times over"
        )
    return decoded


def _check_segment(segment: str, *, is_last: bool) -> None:
    # Some servers (Tomcat among them) drop ";params" before resolving dot
    # segments, so "..;x" climbs as well as "..".
    name = segment.partition(";")[0]
    if name == "" and not (is_last and segment == ""):
        raise BadRequest(
            "the path has an empty segment ('//', or a segment that is only "
            "';params'); only a final trailing slash may be empty"
        )
    # Fullwidth and leader dots become "." under NFKC, which some frameworks apply.
    if {name, unicodedata.normalize("NFKC", name)} & _DOT_SEGMENTS:
        raise BadRequest(
            f"the path has the segment {_shown(segment)} once decoded, which "
            "would leave the upstream's base path (RFC 3986 section 5.2.4)"
        )


def _is_only_chunked(codings: list[str]) -> bool:
    return [coding.strip(" \t").lower() for coding in codings] == ["chunked"]


def _is_decimal(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _shown(value: str) -> str:
    shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
    return ascii(shown)
