from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.config import Settings, load_settings
from riskguard.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "riskguard.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert s.source is None
    assert s.auth.algorithm == "EdDSA"
    assert s.database.url == f"sqlite:///{tmp_path.resolve() / 'riskguard.db'}"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    p = write(sub, '[database]\nurl = "sqlite:///data/rg.db"\n[access]\nmodel = "m.conf"\n')
    s = load_settings(p, environ={})
    assert s.database.url == f"sqlite:///{(sub / 'data' / 'rg.db').resolve()}"
    assert s.resolve(s.access.model) == (sub / "m.conf").resolve()


def test_unknown_key_names_key_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[database]\necho = false\nurll = "sqlite://"\n')
    with pytest.raises(ConfigError) as ei:
        load_settings(p, environ={})
    e = ei.value
    assert e.key == "database.urll"
    assert e.path == str(p.resolve())
    assert e.line == 3
    assert "unknown key 'database.urll'" in str(e)
    assert str(p.resolve()) in e.diagnostics()


def test_unknown_section(tmp_path: Path) -> None:
    p = write(tmp_path, "[fraudd]\nx = 1\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(p, environ={})
    assert ei.value.key == "fraudd"
    assert ei.value.line == 1


def test_wrong_type_is_an_error_not_a_coercion(tmp_path: Path) -> None:
    p = write(tmp_path, '[audit]\n\ncheckpoint_every_events = "500"\n')
    with pytest.raises(ConfigError) as ei:
        load_settings(p, environ={})
    assert ei.value.key == "audit.checkpoint_every_events"
    assert ei.value.line == 3
    assert "invalid value" in ei.value.message


def test_out_of_range_value(tmp_path: Path) -> None:
    p = write(tmp_path, "[auth]\naccess_token_ttl_s = 5\n")
    with pytest.raises(ConfigError, match=r"auth\.access_token_ttl_s"):
        load_settings(p, environ={})


def test_malformed_toml_gives_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[database]\nurl = "sqlite://"\necho = \n')
    with pytest.raises(ConfigError) as ei:
        load_settings(p, environ={})
    assert ei.value.line == 3
    assert "malformed TOML" in ei.value.message


def test_env_override_wins_over_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[audit]\ncheckpoint_every_events = 10\n")
    env = {"RISKGUARD_AUDIT__CHECKPOINT_EVERY_EVENTS": "500", "RISKGUARD_AUTH__ISSUER": "https://x"}
    s = load_settings(p, environ=env)
    assert s.audit.checkpoint_every_events == 500
    assert s.auth.issuer == "https://x"


def test_env_override_bad_type_names_the_variable(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    with pytest.raises(ConfigError) as ei:
        load_settings(p, environ={"RISKGUARD_AUDIT__CHECKPOINT_EVERY_EVENTS": "many"})
    assert "RISKGUARD_AUDIT__CHECKPOINT_EVERY_EVENTS" in str(ei.value)


def test_env_unknown_key_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"unknown key 'database\.nope'"):
        load_settings(p, environ={"RISKGUARD_DATABASE__NOPE": "1"})


def test_config_env_var_selects_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[auth]\naudience = "orders"\n')
    assert load_settings(environ={"RISKGUARD_CONFIG": str(p)}).auth.audience == "orders"


def test_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        s.auth.issuer = "x"  # type: ignore[misc]
