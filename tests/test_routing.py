"""The route table's promises: the right owner, the exact URL, no climbing out."""

from __future__ import annotations

import pytest

from proxy.config import UpstreamConfig
from proxy.errors import BadRequest, NoRoute
from proxy.routing import RouteTable


def upstream(prefix: str, base_url: str) -> UpstreamConfig:
    return UpstreamConfig(path_prefix=prefix, base_url=base_url, token_source="iv")


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(
        {
            "inventory": upstream("/inventory", "https://inventory.example/api/"),
            "reservations": upstream(
                "/inventory/reservations", "http://reservations.internal:8080/v1"
            ),
            "prices": upstream("/prices", "http://pricing.internal"),
        }
    )


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("/inventory/items/1", "inventory"),
        ("/inventory/reservations/9", "reservations"),
        ("/inventory/reservations", "reservations"),
        ("/inventory/reservationsx/9", "inventory"),
        ("/prices/sku-1", "prices"),
    ],
)
def test_longest_prefix_wins(table: RouteTable, path: str, owner: str) -> None:
    """The upstream with the longest matching prefix owns the path."""
    match = table.match(path, "")

    assert match.route.name == owner


def test_longest_prefix_wins_whatever_the_config_order() -> None:
    """Listing the longer prefix first or last makes no difference."""
    table = RouteTable(
        {
            "reservations": upstream("/inventory/reservations", "http://res"),
            "inventory": upstream("/inventory", "http://inv"),
        }
    )

    owners = [
        table.match(path, "").route.name
        for path in ("/inventory/x", "/inventory/reservations/x")
    ]

    assert owners == ["inventory", "reservations"]


@pytest.mark.parametrize("path", ["/inventoryx", "/inventory-old/items", "/pricesx"])
def test_prefixes_match_whole_segments(table: RouteTable, path: str) -> None:
    """``/inventory`` does not own ``/inventoryx``: a prefix ends at a slash."""
    with pytest.raises(NoRoute):
        table.match(path, "")


def test_exact_prefix_maps_to_the_base_url(table: RouteTable) -> None:
    """A path equal to the prefix calls the base URL itself, without a slash added."""
    match = table.match("/inventory", "")

    assert str(match.url) == "https://inventory.example/api"


def test_prefix_with_trailing_slash_keeps_the_slash(table: RouteTable) -> None:
    """``/inventory/`` calls the base URL with its trailing slash."""
    match = table.match("/inventory/", "")

    assert str(match.url) == "https://inventory.example/api/"


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        (
            "/inventory/items/a%20b",
            "",
            "https://inventory.example/api/items/a%20b",
        ),
        (
            "/inventory/items",
            "a=1&a=2",
            "https://inventory.example/api/items?a=1&a=2",
        ),
        (
            "/inventory/search",
            "q=red%2Bblue+green&sku=%2F1",
            "https://inventory.example/api/search?q=red%2Bblue+green&sku=%2F1",
        ),
        (
            "/inventory/items/%C3%A9t%C3%A9;v=1",
            "x=%e2%82%ac&&flag",
            "https://inventory.example/api/items/%C3%A9t%C3%A9;v=1?x=%e2%82%ac&&flag",
        ),
        (
            "/inventory/reservations/a%2Fb",
            "page=2",
            "http://reservations.internal:8080/v1/a%2Fb?page=2",
        ),
    ],
)
def test_remainder_and_query_reach_the_url_byte_for_byte(
    table: RouteTable, path: str, query: str, expected: str
) -> None:
    """Percent-encoding, repeated keys, ``%2B`` and ``+`` pass through untouched."""
    match = table.match(path, query)

    assert str(match.url) == expected
    assert match.url.raw_query_string == query


def test_empty_query_adds_no_question_mark(table: RouteTable) -> None:
    """A call without a query reaches the upstream without a bare ``?``."""
    match = table.match("/prices/sku-1", "")

    assert str(match.url) == "http://pricing.internal/sku-1"


def test_unowned_path_is_no_route(table: RouteTable) -> None:
    """A path no prefix owns is a 404 ``no_route`` naming the path."""
    with pytest.raises(NoRoute) as caught:
        table.match("/orders/42", "a=1")

    assert (caught.value.status, caught.value.code) == (404, "no_route")
    assert caught.value.detail == "no upstream serves the path /orders/42"


def test_non_ascii_target_is_refused_with_an_escaped_detail(table: RouteTable) -> None:
    """Raw characters outside ASCII are a 400 whose detail shows them as escapes."""
    with pytest.raises(BadRequest) as caught:
        table.match("/ordérs/\u202e42", "")

    assert caught.value.detail.isascii()
    assert "'\\xe9'" in caught.value.detail


def test_no_route_detail_truncates_long_paths(table: RouteTable) -> None:
    """A huge unowned path is cut to 200 characters in the detail."""
    path = "/" + "x" * 5000

    with pytest.raises(NoRoute) as caught:
        table.match(path, "")

    assert caught.value.detail.endswith("/" + "x" * 199 + "...")
    assert len(caught.value.detail) < 300


@pytest.mark.parametrize(
    "path",
    [
        "/inventory/..",
        "/inventory/../admin",
        "/inventory/.",
        "/inventory/items/./1",
        "/inventory/%2e%2e/admin",
        "/inventory/%2E%2E/admin",
        "/inventory/%2E./admin",
        "/inventory/.%2e/admin",
        "/inventory/%2e",
        "/inventory/a%2f..%2fb",
        "/inventory/a%2F..%2Fb",
        "/inventory/..\\x",
        "/inventory/..%5cx",
        "/inventory/reservations/../../admin",
    ],
)
def test_dot_segments_are_bad_requests(table: RouteTable, path: str) -> None:
    """A remainder that would climb out of the base path is refused with a 400."""
    with pytest.raises(BadRequest) as caught:
        table.match(path, "")

    assert (caught.value.status, caught.value.code) == (400, "bad_request")


@pytest.mark.parametrize(
    "path", ["/inventory/...", "/inventory/a.b/..c", "/inventory/.well-known"]
)
def test_dotted_names_are_not_dot_segments(table: RouteTable, path: str) -> None:
    """Segments that merely contain dots are ordinary names."""
    match = table.match(path, "")

    assert str(match.url) == "https://inventory.example/api" + path.removeprefix(
        "/inventory"
    )


def test_dots_in_the_query_are_left_alone(table: RouteTable) -> None:
    """Only the path is checked for dot segments; the query is the upstream's."""
    match = table.match("/inventory/files", "path=../x&y=%2e%2e")

    assert match.url.raw_query_string == "path=../x&y=%2e%2e"


@pytest.mark.parametrize(
    "path",
    [
        "http://elsewhere/inventory/x",
        "elsewhere:443",
        "*",
        "//inventory/x",
        "/inventory//admin",
        "/inventory/a%2F%2Fb",
        "/inventory/%252e%252e/admin",
        "/inventory/%2525252e/admin",
        "/inventory/..;x/admin",
        "/inventory/%EF%BC%8E%EF%BC%8E/admin",
        "/inventory/a%00b",
        "/inventory/a%zz",
        "/inventory/a#frag",
    ],
)
def test_escapes_and_other_hosts_are_bad_requests(table: RouteTable, path: str) -> None:
    """Other target forms, empty segments and hidden dots are refused with a 400."""
    with pytest.raises(BadRequest) as caught:
        table.match(path, "")

    assert caught.value.detail.isascii()


def test_unowned_escape_is_a_bad_request_not_no_route(table: RouteTable) -> None:
    """The target is checked before any prefix, so no owner is needed to refuse it."""
    with pytest.raises(BadRequest):
        table.match("/orders/../inventory/x", "")
