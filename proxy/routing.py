"""The route table: which upstream owns a request path, and where the call goes.

Matching works on the raw (still percent-encoded) path so that the path and query
reach the upstream byte for byte. Prefixes match whole segments, longest first:
``/inventory`` owns ``/inventory`` and ``/inventory/x`` but not ``/inventoryx``.
Before any prefix is tried the target passes ``proxy.request_hygiene``, so a path
that could climb out of an upstream's base path, or a target that names another
host, is refused whichever upstream would have owned it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from proxy.config import UpstreamConfig
from proxy.errors import NoRoute
from proxy.request_hygiene import check_origin_form
from proxy.stand_in import StandInTokens


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    upstream: UpstreamConfig
    stand_in: StandInTokens


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request matched to its upstream, with the exact URL to call.

    ``remainder`` is the raw path below the upstream's prefix.
    """

    route: Route
    url: URL
    remainder: str


class RouteTable:
    """Maps request paths to upstreams by their ``path_prefix``."""

    def __init__(self, upstreams: Mapping[str, UpstreamConfig]) -> None:
        routes = [
            Route(name, upstream, StandInTokens(upstream))
            for name, upstream in upstreams.items()
        ]
        self._routes = sorted(
            routes, key=lambda route: len(route.upstream.path_prefix), reverse=True
        )

    def match(self, raw_path: str, raw_query: str) -> RouteMatch:
        """The upstream URL for a raw path and query.

        Raises ``BadRequest`` when the target is not a safe origin-form one (see
        ``proxy.request_hygiene``) and ``NoRoute`` when no prefix owns the path.
        """
        check_origin_form(raw_path, raw_query)
        return self.find(raw_path, raw_query)

    def find(self, raw_path: str, raw_query: str) -> RouteMatch:
        """``match`` for a target that has passed ``check_origin_form`` already."""
        for route in self._routes:
            prefix = route.upstream.path_prefix
            if raw_path == prefix or raw_path.startswith(prefix + "/"):
                remainder = raw_path[len(prefix) :]
                target = route.upstream.base_url + remainder
                if raw_query:
                    target += "?" + raw_query
                return RouteMatch(route, URL(target, encoded=True), remainder)
        raise NoRoute(f"no upstream serves the path {_printable(raw_path)}")


def _printable(raw_path: str) -> str:
    shown = raw_path if len(raw_path) <= 200 else raw_path[:200] + "..."
    return shown.encode("ascii", "backslashreplace").decode("ascii")
