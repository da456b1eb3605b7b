"""Each client authentication method's settings are checked when the config loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, ProxyConfig, parse_config
from tests.pki import make_ec_key, make_rsa_key

SECRET = "config-secret-value-0123456789abcdef"


def config_with(source: dict[str, Any]) -> ProxyConfig:
    """Load a config whose only token source ``iv`` has the given settings."""
    if source.get("kind") != "static":
        source = {"token_url": "https://idp.example/token", **source}
    lines = ["[token_sources.iv]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in source.items()]
    lines += [
        "[upstreams.inventory]",
        'path_prefix = "/inventory"',
        'base_url = "https://inventory.example"',
        'token_source = "iv"',
    ]
    return parse_config("\n".join(lines), {})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"client_id": "oms", "auth_method": "client_secret_jwt"},
            "token_sources.iv: client_secret_jwt needs exactly one of client_secret",
        ),
        (
            {"client_id": "oms", "auth_method": "private_key_jwt"},
            "token_sources.iv: private_key_file goes with private_key_jwt",
        ),
        (
            {"client_id": "oms", "auth_method": "tls_client_auth"},
            "token_sources.iv: tls_client_auth needs tls_client_cert_file",
        ),
        (
            {
                "client_id": "oms",
                "auth_method": "tls_client_auth",
                "client_secret": SECRET,
            },
            "token_sources.iv: tls_client_auth uses no client secret",
        ),
        (
            {
                "client_id": "oms",
                "client_secret": SECRET,
                "auth_method": "client_secret_jwt",
                "signing_alg": "RS256",
            },
            "token_sources.iv: client_secret_jwt signs with HS256",
        ),
        (
            {"client_id": "oms", "client_secret": SECRET, "auth_method": "magic"},
            "token_sources.iv.auth_method: Input should be",
        ),
        (
            {"kind": "static"},
            "token_sources.iv: set exactly one of value or value_file",
        ),
        (
            {"kind": "static", "value": SECRET, "client_id": "oms"},
            "token_sources.iv.client_id: is not a known setting",
        ),
    ],
)
def test_method_settings_are_checked_with_the_key_named(
    source: dict[str, Any], message: str
) -> None:
    """A method missing what it needs, or given what it ignores, names the source."""
    with pytest.raises(ConfigError) as caught:
        config_with(source)

    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


def test_private_key_of_the_wrong_kind_names_the_key_file(tmp_path: Path) -> None:
    """An EC key configured for RS256 stops start-up, without printing the key."""
    pair = make_ec_key(tmp_path)

    with pytest.raises(ConfigError) as caught:
        config_with(
            {
                "client_id": "oms",
                "auth_method": "private_key_jwt",
                "private_key_file": str(pair.private_key),
                "signing_alg": "RS256",
            }
        )

    message = "token_sources.iv: private_key_file holds no RSA private key for RS256"
    assert message in str(caught.value)
    assert pair.private_pem.splitlines()[1] not in str(caught.value)


def test_valid_private_key_jwt_source_loads(tmp_path: Path) -> None:
    """A readable RSA key with RS256 (the default) is accepted."""
    pair = make_rsa_key(tmp_path)

    config = config_with(
        {
            "client_id": "oms",
            "auth_method": "private_key_jwt",
            "private_key_file": str(pair.private_key),
        }
    )

    source = config.token_sources["iv"]
    assert source.kind == "oauth2"
    assert source.jwt_alg == "RS256"  # type: ignore[union-attr]
