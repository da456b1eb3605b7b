"""The ``[token_store]`` table: memory by default, Redis only with what it needs."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from proxy.config import ConfigError, parse_config
from proxy.token_store import TOKEN_KEY_ENV

PASSWORD = "r3dis-Do-Not-Print"
BASE = """
[token_sources.iv]
token_url = "https://idp.example/oauth2/token"
client_id = "oms"
client_secret = "secret"

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "https://inventory.example"
token_source = "iv"
"""


def with_store(table: str) -> str:
    return f"{BASE}\n[token_store]\n{table}\n"


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return dict(caught.value.problems)


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(TOKEN_KEY_ENV, key)
    return key


def test_tokens_stay_in_memory_by_default() -> None:
    """Without a [token_store] table each replica keeps its own tokens."""
    config = parse_config(BASE)

    assert config.token_store.kind == "memory"


def test_a_redis_store_reads_its_settings(token_key: str) -> None:
    """URL, timeouts, lease and wait come from the table."""
    table = f"""kind = "redis"
url = "rediss://:{PASSWORD}@redis.internal:6380/2"
operation_timeout_s = 0.1
lock_lease_s = 20
wait_for_peer_s = 3
"""
    store = parse_config(with_store(table)).token_store

    assert store.kind == "redis"
    assert store.url is not None
    assert store.url.get_secret_value().endswith("@redis.internal:6380/2")
    assert (store.operation_timeout_s, store.lock_lease_s, store.wait_for_peer_s) == (
        0.1,
        20,
        3,
    )
    assert PASSWORD not in repr(store)


def test_a_redis_store_without_the_key_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No INVENTORY_PROXY_TOKEN_KEY: the error names the table and the variable."""
    monkeypatch.delenv(TOKEN_KEY_ENV, raising=False)

    found = problems(with_store('kind = "redis"\nurl = "redis://127.0.0.1:6379"'))

    assert TOKEN_KEY_ENV in found["token_store"]
    assert "not set" in found["token_store"]


def test_a_key_that_is_not_a_fernet_key_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed key is refused at start-up, and not repeated in the error."""
    monkeypatch.setenv(TOKEN_KEY_ENV, "not-a-fernet-key-XYZ")

    found = problems(with_store('kind = "redis"\nurl = "redis://127.0.0.1:6379"'))

    assert "Fernet key" in found["token_store"]
    assert "not-a-fernet-key-XYZ" not in str(found)


def test_several_keys_let_a_new_one_roll_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys separated by commas are accepted: the first encrypts, any decrypts."""
    keys = ",".join(Fernet.generate_key().decode() for _ in range(2))
    monkeypatch.setenv(TOKEN_KEY_ENV, keys)

    config = parse_config(with_store('kind = "redis"\nurl = "redis://h:6379"'))

    assert config.token_store.kind == "redis"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "redis"', "exactly one of url or sentinels"),
        (
            'kind = "redis"\nurl = "redis://h"\nsentinels = ["s:26379"]',
            "exactly one of url or sentinels",
        ),
        ('kind = "redis"\nsentinels = ["s:26379"]', "sentinel_master"),
        ('kind = "redis"\nsentinels = ["s"]\nsentinel_master = "m"', "host:port"),
        (
            'kind = "redis"\nsentinels = ["s:1"]\nsentinel_master = "m"\n'
            "cluster = true",
            "cluster = true needs url",
        ),
        ('url = "redis://h:6379"', 'apply to kind = "redis" only'),
        (
            'kind = "redis"\nurl = "redis://h"\noperation_timeout_s = 2\n'
            "lock_lease_s = 1",
            "lock_lease_s must be longer",
        ),
    ],
)
def test_incomplete_redis_settings_name_the_table(
    token_key: str, table: str, message: str
) -> None:
    """Each contradiction stops start-up with the table's key and the fix."""
    found = problems(with_store(table))

    assert message in " ".join(found.values())
    assert all(key.startswith("token_store") for key in found)


def test_a_url_that_is_not_redis_is_refused_without_repeating_it(
    token_key: str,
) -> None:
    """The URL may carry a password: the error names the scheme only."""
    found = problems(
        with_store(f'kind = "redis"\nurl = "https://:{PASSWORD}@redis.internal"')
    )

    assert "scheme 'https'" in found["token_store.url"]
    assert PASSWORD not in str(found)
