"""``inventory-proxy check-config``: a summary when good, the bad key when not."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import CONFIG_ENV, main

SECRET = "s3cr3t-Never-Printed"

GOOD_TOML = f"""
[token_sources.iv]
token_url = "https://idp.example/oauth2/token"
client_id = "oms-proxy"
client_secret = "{SECRET}"

[token_sources.pricing]
token_url = "https://login.pricing.example/token"
client_id = "oms-pricing"
client_secret = "${{PRICING_SECRET}}"
auth_method = "client_secret_post"

[upstreams.inventory]
path_prefix = "/inventory"
base_url = "https://inventory.example/api"
token_source = "iv"

[upstreams.prices]
path_prefix = "/prices"
base_url = "http://pricing.internal:8081"
token_source = "pricing"
timeout_s = 2.5
"""


@pytest.fixture
def good_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid two-upstream file; one secret inline, one from the environment."""
    monkeypatch.setenv("PRICING_SECRET", "env-" + SECRET)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    path = tmp_path / "proxy.toml"
    path.write_text(GOOD_TOML, encoding="utf-8")
    return path


def test_good_config_exits_zero_with_one_line_per_upstream(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file is summarised: a header, then one line for each upstream."""
    exit_code = main(["check-config", "--config", str(good_config)])

    out = capsys.readouterr().out
    assert exit_code == 0
    assert out.splitlines() == [
        f"{good_config}: ok, 2 upstream(s)",
        "  inventory: /inventory -> https://inventory.example/api "
        "(token iv: client_secret_basic as 'oms-proxy' at "
        "https://idp.example/oauth2/token, timeout 10s)",
        "  prices: /prices -> http://pricing.internal:8081 "
        "(token pricing: client_secret_post as 'oms-pricing' at "
        "https://login.pricing.example/token, timeout 2.5s)",
    ]


def test_good_config_never_prints_a_secret(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither the inline secret nor the one from the environment is printed."""
    main(["check-config", "--config", str(good_config)])

    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


def test_bad_config_exits_two_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that cannot run exits 2 and names the bad key on stderr."""
    monkeypatch.setenv("PRICING_SECRET", "env-" + SECRET)
    path = tmp_path / "proxy.toml"
    path.write_text(GOOD_TOML.replace('"/prices"', '"prices"'), encoding="utf-8")

    exit_code = main(["check-config", "--config", str(path)])

    captured = capsys.readouterr()
    assert exit_code == 2
    assert "upstreams.prices.path_prefix" in captured.err
    assert captured.out == ""
    assert SECRET not in captured.err


def test_unset_variable_exits_two_naming_it(
    good_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A placeholder whose variable is unset names the key and the variable."""
    monkeypatch.delenv("PRICING_SECRET")

    exit_code = main(["check-config", "--config", str(good_config)])

    err = capsys.readouterr().err
    assert exit_code == 2
    assert "token_sources.pricing.client_secret" in err
    assert "PRICING_SECRET" in err


def test_config_path_may_come_from_the_environment(
    good_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --config, INVENTORY_PROXY_CONFIG names the file."""
    monkeypatch.setenv(CONFIG_ENV, str(good_config))

    exit_code = main(["check-config"])

    assert exit_code == 0
    assert capsys.readouterr().out.startswith(f"{good_config}: ok, 2 upstream(s)")


def test_config_option_overrides_the_environment(
    good_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--config wins over INVENTORY_PROXY_CONFIG."""
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "elsewhere.toml"))

    exit_code = main(["check-config", "--config", str(good_config)])

    assert exit_code == 0
    assert capsys.readouterr().out.startswith(f"{good_config}: ok")


def test_no_config_at_all_exits_two_saying_how_to_give_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With neither --config nor the variable, the message says how to pass one."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    exit_code = main(["check-config"])

    err = capsys.readouterr().err
    assert exit_code == 2
    assert "pass --config or set INVENTORY_PROXY_CONFIG" in err


def test_missing_config_file_exits_two_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --config path that does not exist exits 2 and names the path."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    missing = tmp_path / "absent.toml"

    exit_code = main(["check-config", "--config", str(missing)])

    err = capsys.readouterr().err
    assert exit_code == 2
    assert f"cannot read {missing}" in err
