"""The configuration's promises: right values in, every bad key named, no secret out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, load_config, parse_config
from proxy.source_config import OAuth2SourceConfig, StaticSourceConfig
from proxy.token_sources import client_authentication

SECRET = "s3cr3t-Do-Not-Print"

FULL_TOML = """
[server]
host = "10.1.2.3"
port = 9090
max_body_bytes = 65536
shutdown_grace_s = 2.5

[log]
level = "debug"
format = "console"

[token_sources.iv]
token_url = "https://idp.example/oauth2/token"
client_id = "oms-proxy"
client_secret = "s3cr3t-Do-Not-Print"
auth_method = "client_secret_post"
scope = "inventory.read inventory.write"
audience = "https://inventory.example"
refresh_margin_s = 45
timeout_s = 3

[token_sources.pricing]
token_url = "https://login.pricing.example/token"
client_id = "oms-pricing"
client_secret = "another-secret"
resource = "urn:pricing"

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "https://inventory.example/api/v2/"
token_source = "iv"
timeout_s = 15

[upstreams.prices]
path_prefix = "/prices/"
base_url = "http://pricing.internal:8081"
token_source = "pricing"
connect_timeout_s = 1.5
"""


def base_tree() -> dict[str, Any]:
    """A small valid configuration as a tree, for tests to spoil one key of."""
    return {
        "token_sources": {
            "iv": {
                "token_url": "https://idp.example/oauth2/token",
                "client_id": "oms-proxy",
                "client_secret": SECRET,
            }
        },
        "upstreams": {
            "inventory": {
                "path_prefix": "/inventory",
                "base_url": "https://inventory.example/api",
                "token_source": "iv",
            }
        },
    }


def to_toml(tree: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """Render a tree of tables and scalars as TOML text."""
    scalars = {key: value for key, value in tree.items() if not isinstance(value, dict)}
    tables = {key: value for key, value in tree.items() if isinstance(value, dict)}
    lines = []
    if path and (scalars or not tables):
        lines.append(f"[{'.'.join(path)}]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    lines += [to_toml(table, (*path, key)) for key, table in tables.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def config_error(tree: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that ``tree`` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(to_toml(tree), environ or {})
    return str(caught.value)


def test_full_config_loads_with_its_values(tmp_path: Path) -> None:
    """A complete file with two sources and two upstreams loads every value given."""
    path = tmp_path / "proxy.toml"
    path.write_text(FULL_TOML, encoding="utf-8")

    config = load_config(path, environ={})

    assert (config.server.host, config.server.port) == ("10.1.2.3", 9090)
    assert config.server.max_body_bytes == 65536
    assert config.server.shutdown_grace_s == 2.5
    assert (config.log.level, config.log.format) == ("debug", "console")
    iv = config.token_sources["iv"]
    assert iv.token_url == "https://idp.example/oauth2/token"
    assert (iv.client_id, sent_secret(iv)) == ("oms-proxy", SECRET)
    assert iv.auth_method == "client_secret_post"
    assert (iv.refresh_margin_s, iv.timeout_s, iv.default_ttl_s) == (45, 3, 300)
    pricing = config.token_sources["pricing"]
    assert pricing.auth_method == "client_secret_basic"
    assert pricing.resource == "urn:pricing"
    inventory = config.upstreams["inventory"]
    assert inventory.base_url == "https://inventory.example/api/v2"
    assert (inventory.token_source, inventory.timeout_s) == ("iv", 15)
    prices = config.upstreams["prices"]
    assert (prices.path_prefix, prices.base_url) == (
        "/prices",
        "http://pricing.internal:8081",
    )
    assert prices.connect_timeout_s == 1.5


def test_omitted_sections_take_their_defaults() -> None:
    """Without [server] and [log] the proxy listens on loopback and logs JSON."""
    text = to_toml(base_tree())

    config = parse_config(text, {})

    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert (config.log.level, config.log.format) == ("info", "json")


def test_placeholders_are_filled_from_the_given_environ() -> None:
    """``${VAR}`` takes its value from the mapping passed in, also inside URLs."""
    tree = base_tree()
    tree["token_sources"]["iv"]["client_secret"] = "${IV_SECRET}"
    tree["upstreams"]["inventory"]["base_url"] = "https://${INV_HOST}:8443/api"
    environ = {"IV_SECRET": SECRET, "INV_HOST": "inventory.internal"}

    config = parse_config(to_toml(tree), environ)

    assert sent_secret(config.token_sources["iv"]) == SECRET
    upstream = config.upstreams["inventory"]
    assert upstream.base_url == "https://inventory.internal:8443/api"


def test_double_dollar_is_a_literal_dollar() -> None:
    """``$$`` stands for one dollar, so ``$${X}`` is the text ``${X}``, not a lookup."""
    tree = base_tree()
    tree["token_sources"]["iv"]["client_secret"] = "pa$$word-$${NOT_A_VAR}"

    config = parse_config(to_toml(tree), {})

    secret = sent_secret(config.token_sources["iv"])
    assert secret == "pa$word-${NOT_A_VAR}"


def test_unset_variable_names_the_key_and_the_variable() -> None:
    """A placeholder with no value names the dotted key and the missing variable."""
    tree = base_tree()
    tree["token_sources"]["iv"]["client_secret"] = "${IV_SECRET}"

    message = config_error(tree)

    assert "token_sources.iv.client_secret" in message
    assert "IV_SECRET" in message


def test_given_environ_replaces_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a mapping is passed, a variable set only in os.environ counts as unset."""
    monkeypatch.setenv("INV_HOST", "inventory.internal")
    tree = base_tree()
    tree["upstreams"]["inventory"]["base_url"] = "https://${INV_HOST}/api"

    message = config_error(tree, environ={"UNRELATED": "1"})

    assert "upstreams.inventory.base_url" in message
    assert "INV_HOST" in message


@pytest.mark.parametrize(
    "path",
    [
        ("surprise",),
        ("server", "surprise"),
        ("log", "surprise"),
        ("token_sources", "iv", "surprise"),
        ("upstreams", "inventory", "surprise"),
    ],
)
def test_unknown_key_is_named_at_every_level(path: tuple[str, ...]) -> None:
    """A key the proxy does not know is refused with its dotted name."""
    tree = base_tree()
    table = tree
    for part in path[:-1]:
        table = table.setdefault(part, {})
    table[path[-1]] = 1

    message = config_error(tree)

    assert f"{'.'.join(path)}: is not a known setting" in message


def test_unknown_token_source_names_the_key_and_lists_known_sources() -> None:
    """An upstream naming a missing source points at its key and the known names."""
    tree = base_tree()
    tree["token_sources"]["pricing"] = dict(tree["token_sources"]["iv"])
    tree["upstreams"]["inventory"]["token_source"] = "ivv"

    message = config_error(tree)

    assert "upstreams.inventory.token_source" in message
    assert "'ivv'" in message
    assert "known: iv, pricing" in message


def test_duplicate_path_prefixes_are_refused() -> None:
    """Two upstreams cannot own the same prefix, even spelled with a trailing slash."""
    tree = base_tree()
    tree["upstreams"]["stock"] = {
        "path_prefix": "/inventory/",
        "base_url": "https://stock.example",
        "token_source": "iv",
    }

    message = config_error(tree)

    assert "upstreams.stock.path_prefix" in message
    assert "upstreams.inventory" in message


def test_config_without_upstreams_is_refused() -> None:
    """A proxy with nothing to route to does not start."""
    tree = base_tree()
    del tree["upstreams"]

    message = config_error(tree)

    assert "upstreams: is required" in message


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("token_sources.iv.token_url", "ftp://idp.example/token"),
        ("token_sources.iv.token_url", "https:///token"),
        ("token_sources.iv.token_url", "idp.example/token"),
        ("token_sources.iv.token_url", "https://oms:pw@idp.example/token"),
        ("token_sources.iv.token_url", "https://idp.example/token#frag"),
        ("upstreams.inventory.base_url", "ftp://inventory.example"),
        ("upstreams.inventory.base_url", "http://"),
        ("upstreams.inventory.base_url", "https://svc@inventory.example/api"),
        ("upstreams.inventory.base_url", "https://inventory.example/api?v=2"),
    ],
)
def test_bad_url_names_the_key(key: str, url: str) -> None:
    """A URL that is not plain absolute http(s) is refused under its dotted key."""
    tree = base_tree()
    section, name, field = key.split(".")
    tree[section][name][field] = url

    message = config_error(tree)

    assert f"{key}: " in message


def test_token_url_may_carry_a_query() -> None:
    """Some identity providers need a query on the token endpoint; it is kept."""
    tree = base_tree()
    tree["token_sources"]["iv"]["token_url"] = "https://idp.example/token?tenant=7"

    config = parse_config(to_toml(tree), {})

    assert config.token_sources["iv"].token_url.endswith("?tenant=7")


def test_credentials_refused_in_a_url_are_not_shown() -> None:
    """The error for a URL with a password does not repeat the password."""
    tree = base_tree()
    tree["upstreams"]["inventory"]["base_url"] = "https://svc:hunter2@inv.example"

    message = config_error(tree)

    assert "upstreams.inventory.base_url" in message
    assert "hunter2" not in message


def test_url_with_wrong_scheme_does_not_show_its_password() -> None:
    """A URL refused for its scheme never prints the password it carries."""
    tree = base_tree()
    tree["token_sources"]["iv"]["token_url"] = "ftp://oms:hunter2@idp.example/token"

    message = config_error(tree)

    assert "token_sources.iv.token_url" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "prefix",
    [
        "inventory",
        "/",
        "/a/../b",
        "/a/./b",
        "/..",
        "/a//b",
        "/healthz",
        "/healthz/",
        "/readyz",
        "/with space",
        "/a%2e%2e",
    ],
)
def test_bad_path_prefix_names_the_key(prefix: str) -> None:
    """A prefix that is relative, dotted, unclean or the proxy's own is refused."""
    tree = base_tree()
    tree["upstreams"]["inventory"]["path_prefix"] = prefix

    message = config_error(tree)

    assert "upstreams.inventory.path_prefix: " in message


def test_path_prefix_loses_its_trailing_slash() -> None:
    """``/inventory/`` and ``/inventory`` are the same prefix."""
    tree = base_tree()
    tree["upstreams"]["inventory"]["path_prefix"] = "/inventory/v2/"

    config = parse_config(to_toml(tree), {})

    assert config.upstreams["inventory"].path_prefix == "/inventory/v2"


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    """A secret file's surrounding whitespace and final newline are not the secret."""
    secret_file = tmp_path / "iv.secret"
    secret_file.write_text(f"  {SECRET}\n", encoding="utf-8")
    tree = base_tree()
    del tree["token_sources"]["iv"]["client_secret"]
    tree["token_sources"]["iv"]["client_secret_file"] = str(secret_file)

    config = parse_config(to_toml(tree), {})

    assert sent_secret(config.token_sources["iv"]) == SECRET


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    """Exactly one of the two secret settings may be given."""
    secret_file = tmp_path / "iv.secret"
    secret_file.write_text("from-the-file\n", encoding="utf-8")
    tree = base_tree()
    tree["token_sources"]["iv"]["client_secret_file"] = str(secret_file)

    message = config_error(tree)

    assert (
        "token_sources.iv: client_secret_basic needs exactly one of client_secret"
        in message
    )


def test_a_source_without_any_secret_is_refused() -> None:
    """A token source needs a secret or a secret file."""
    tree = base_tree()
    del tree["token_sources"]["iv"]["client_secret"]

    message = config_error(tree)

    assert (
        "token_sources.iv: client_secret_basic needs exactly one of client_secret"
        in message
    )


def test_missing_secret_file_names_the_key(tmp_path: Path) -> None:
    """A secret file that cannot be read is named with its source and path."""
    missing = tmp_path / "absent.secret"
    tree = base_tree()
    del tree["token_sources"]["iv"]["client_secret"]
    tree["token_sources"]["iv"]["client_secret_file"] = str(missing)

    message = config_error(tree)

    assert "token_sources.iv.client_secret_file: cannot read" in message
    assert str(missing) in message


def test_empty_secret_file_names_the_key(tmp_path: Path) -> None:
    """A secret file holding only whitespace is refused rather than sent as ''."""
    blank = tmp_path / "blank.secret"
    blank.write_text(" \n\n", encoding="utf-8")
    tree = base_tree()
    del tree["token_sources"]["iv"]["client_secret"]
    tree["token_sources"]["iv"]["client_secret_file"] = str(blank)

    message = config_error(tree)

    assert "token_sources.iv.client_secret_file:" in message
    assert "is empty" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("token_sources.iv.timeout_s", 0),
        ("token_sources.iv.default_ttl_s", -5),
        ("token_sources.iv.backoff_initial_s", 0.0),
        ("token_sources.iv.refresh_margin_s", -1),
        ("upstreams.inventory.timeout_s", 0),
        ("upstreams.inventory.connect_timeout_s", -0.5),
        ("server.shutdown_grace_s", -1),
    ],
)
def test_non_positive_duration_is_refused(key: str, value: float) -> None:
    """Durations that must be positive (or at least zero) name their key."""
    tree = base_tree()
    *tables, field = key.split(".")
    table = tree
    for part in tables:
        table = table.setdefault(part, {})
    table[field] = value

    message = config_error(tree)

    assert f"{key}: " in message


def test_fractional_durations_are_accepted() -> None:
    """Half a second is a valid timeout, margin or back-off."""
    tree = base_tree()
    source = tree["token_sources"]["iv"]
    source.update(timeout_s=0.5, refresh_margin_s=0.5, backoff_initial_s=0.5)
    tree["upstreams"]["inventory"]["connect_timeout_s"] = 0.5

    config = parse_config(to_toml(tree), {})

    iv = config.token_sources["iv"]
    assert (iv.timeout_s, iv.refresh_margin_s, iv.backoff_initial_s) == (0.5,) * 3
    assert config.upstreams["inventory"].connect_timeout_s == 0.5


def test_backoff_max_below_initial_is_refused() -> None:
    """The back-off ceiling cannot be lower than its first step."""
    tree = base_tree()
    tree["token_sources"]["iv"].update(backoff_initial_s=10, backoff_max_s=5)

    message = config_error(tree)

    assert "backoff_max_s must be at least backoff_initial_s" in message


def test_token_params_carry_the_named_and_extra_parameters() -> None:
    """The token request form holds grant_type, scope, audience, resource and extras."""
    tree = base_tree()
    tree["token_sources"]["iv"].update(
        scope="inventory.read",
        audience="https://inventory.example",
        resource="urn:inventory",
        extra_params={"tenant": "eu-1"},
    )
    source = parse_config(to_toml(tree), {}).token_sources["iv"]

    params = source.token_params()

    assert params == {
        "grant_type": "client_credentials",
        "scope": "inventory.read",
        "audience": "https://inventory.example",
        "resource": "urn:inventory",
        "tenant": "eu-1",
    }


def test_token_params_leave_out_unset_names() -> None:
    """Without scope, audience or resource the form holds the grant type alone."""
    source = parse_config(to_toml(base_tree()), {}).token_sources["iv"]

    params = source.token_params()

    assert params == {"grant_type": "client_credentials"}


@pytest.mark.parametrize("name", ["grant_type", "client_id", "client_secret", "scope"])
def test_extra_params_may_not_shadow_owned_names(name: str) -> None:
    """An extra parameter cannot override what the named settings own."""
    tree = base_tree()
    tree["token_sources"]["iv"]["extra_params"] = {name: "override"}

    message = config_error(tree)

    assert f"token_sources.iv.extra_params: must not set {name}" in message


def test_invalid_toml_says_so() -> None:
    """A file that is not TOML is reported as such, with where it broke."""
    text = "[server\nport = 8080\n"

    with pytest.raises(ConfigError) as caught:
        parse_config(text, {}, origin="proxy.toml")

    assert "proxy.toml is not valid TOML" in str(caught.value)


def test_load_config_on_a_missing_file_raises_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing, environ={})

    assert f"cannot read {missing}" in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    """Several bad keys in one file are all named in one error."""
    tree = base_tree()
    tree["token_sources"]["iv"].update(timeout_s=-1, surprise=True)
    tree["upstreams"]["inventory"]["base_url"] = "ftp://inventory.example"

    with pytest.raises(ConfigError) as caught:
        parse_config(to_toml(tree), {})

    keys = {key for key, _why in caught.value.problems}
    assert keys == {
        "token_sources.iv.timeout_s",
        "token_sources.iv.surprise",
        "upstreams.inventory.base_url",
    }


def _secret_as_number(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_secret"] = 31415926535


def _secret_as_table(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_secret"] = {"value": SECRET}


def _secret_as_list(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_secret"] = [SECRET]


def _secret_and_missing_file(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_secret_file"] = "/nonexistent/iv.secret"


def _other_keys_wrong(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"].update(
        client_id="",
        timeout_s=-1,
        auth_method="client_secret_jwt",
        token_url="ftp://idp.example",
        extra_params={"client_secret": SECRET},
        backoff_initial_s=9,
        backoff_max_s=1,
        surprise=SECRET,
    )


def _client_id_wrong_type(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_id"] = ["oms"]


def _missing_token_url(tree: dict[str, Any]) -> None:
    del tree["token_sources"]["iv"]["token_url"]


def _upstream_names_unknown_source(tree: dict[str, Any]) -> None:
    tree["upstreams"]["inventory"]["token_source"] = "elsewhere"


def _unset_variable_beside_the_secret(tree: dict[str, Any]) -> None:
    tree["token_sources"]["iv"]["client_id"] = "${MISSING_ID}"


@pytest.mark.parametrize(
    "spoil",
    [
        _secret_as_number,
        _secret_as_table,
        _secret_as_list,
        _secret_and_missing_file,
        _other_keys_wrong,
        _client_id_wrong_type,
        _missing_token_url,
        _upstream_names_unknown_source,
        _unset_variable_beside_the_secret,
    ],
)
def test_config_error_never_contains_the_secret(
    spoil: Callable[[dict[str, Any]], None],
) -> None:
    """Whatever is wrong with a token source, its error does not show the secret."""
    tree = base_tree()
    spoil(tree)

    message = config_error(tree)

    assert SECRET not in message
    assert "31415926535" not in message


def test_invalid_toml_on_the_secret_line_does_not_show_the_secret() -> None:
    """A TOML syntax error next to the secret reports a position, not the text."""
    text = to_toml(base_tree()).replace(f'"{SECRET}"', f'"{SECRET}')

    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})

    assert "is not valid TOML" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_annotated_example_config_is_valid(tmp_path: Path) -> None:
    """config/proxy.example.toml loads once its secrets exist."""
    secret_file = tmp_path / "pricing_client_secret"
    secret_file.write_text("pricing-secret\n", encoding="utf-8")
    example = Path(__file__).parent.parent / "config" / "proxy.example.toml"
    text = example.read_text(encoding="utf-8").replace(
        "/run/secrets/pricing_client_secret", str(secret_file)
    )

    environ = {"IV_CLIENT_SECRET": "iv-secret", "CARRIER_API_KEY": "k"}

    config = parse_config(text, environ)

    assert sorted(config.upstreams) == ["carrier", "delivery", "inventory", "price"]
    assert sent_secret(config.token_sources["pricing"]) == "pricing-secret"


def sent_secret(source: OAuth2SourceConfig | StaticSourceConfig) -> str:
    """The client secret a token request would carry, as client_secret_post sends it."""
    assert isinstance(source, OAuth2SourceConfig)
    post = source.model_copy(update={"auth_method": "client_secret_post"})
    params: dict[str, str] = {}
    client_authentication(post).apply(params, {})
    return params["client_secret"]
