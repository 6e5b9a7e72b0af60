"""``Guard.audit`` built from ``[audit]`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.cli._audit import write_signing_key
from riskguard.config import load_settings
from riskguard.errors import ConfigError
from riskguard.guard import Guard


def _config(tmp_path: Path, audit: str) -> Path:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///rg.db"\n\n[audit]\n{audit}\n', encoding="utf-8")
    return cfg


def test_missing_signing_key_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with Guard(load_settings(_config(tmp_path, ""))) as guard, pytest.raises(ConfigError) as err:
        _ = guard.audit
    assert err.value.key == "audit.signing_key"
    assert "keys/audit-signing.pem" in str(err.value) and "keygen" in err.value.diagnostics()


def test_checkpoints_off_records_without_a_key(tmp_path: Path) -> None:
    with Guard(load_settings(_config(tmp_path, "checkpoints = false"))) as guard:
        guard.create_schema()
        guard.audit.record("auth.login", "success")
        report = guard.audit.verify()
    assert report.ok and "only the hash chain" not in report.detail
    assert "signatures not checked" in report.detail


def test_settings_reach_the_log(tmp_path: Path) -> None:
    write_signing_key(tmp_path / "k" / "sign.pem")
    audit = 'signing_key = "k/sign.pem"\nlog_id = "shop.example/audit"\n'
    audit += 'checkpoint_every_events = 3\ncheckpoint_every_seconds = 0\nwitness_path = "w.jsonl"'
    with Guard(load_settings(_config(tmp_path, audit))) as guard:
        guard.create_schema()
        for _ in range(7):
            guard.audit.record("order.read", "allow")
        sizes = [c.checkpoint.tree_size for c in guard.audit.checkpoints()]
        origin = guard.audit.checkpoints()[0].checkpoint.origin
    assert sizes == [3, 6] and origin == "shop.example/audit"
    assert len((tmp_path / "w.jsonl").read_text().splitlines()) == 2


def test_a_log_id_with_spaces_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_config(tmp_path, 'log_id = "my log"'))
    assert err.value.key == "audit.log_id"


def test_a_missing_schema_says_how_to_create_it(tmp_path: Path) -> None:
    from riskguard.errors import StorageError

    settings = load_settings(_config(tmp_path, "checkpoints = false"))
    with Guard(settings) as guard, pytest.raises(StorageError) as err:
        guard.audit.record("auth.login", "success")
    assert "create_schema" in err.value.diagnostics()


def test_a_key_history_from_the_config_signs_and_verifies(tmp_path: Path) -> None:
    from riskguard.audit import generate_signing_key

    key = generate_signing_key("audit-2026a")
    (tmp_path / "a.pem").write_bytes(key.private_pem())
    old = generate_signing_key("audit-2025").trusted()
    (tmp_path / "keys.toml").write_text(
        f'[[key]]\nname = "audit-2025"\npublic_key = "{old.verifier_key()}"\n\n'
        f'[[key]]\nname = "audit-2026a"\npublic_key = "{key.trusted().verifier_key()}"\n'
        'private_key = "a.pem"\n',
        encoding="utf-8",
    )
    with Guard(load_settings(_config(tmp_path, 'key_history = "keys.toml"'))) as guard:
        guard.create_schema()
        guard.audit.record("auth.login", "success")
        signed = guard.audit.checkpoint()
        report = guard.audit.verify()
    assert [name for name, _, _ in signed.signatures()] == ["audit-2026a"]
    assert report.ok and report.checkpoints == 1
