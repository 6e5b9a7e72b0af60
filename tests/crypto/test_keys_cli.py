"""``riskguard keys …`` end to end on a SQLite project with an encrypted keyring file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests._cli import run
from tests.crypto import cli_models

PASS = "keyring passphrase for the test"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///app.db"\n'
        "[audit]\ncheckpoints = false\n"
        '[keys]\nprovider = "file"\nkeyring_path = "keys/keyring.json"\n'
        "dek_cache_ttl_s = 0\n"  # so that retire need not wait out a cache
        'models = ["tests.crypto.cli_models"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("RISKGUARD_CONFIG", str(cfg))
    monkeypatch.setenv("RISKGUARD_KEYRING_PASSPHRASE", PASS)
    monkeypatch.setenv("RISKGUARD_EXPORT_PASSPHRASE", "export passphrase for the test")
    cli_models.guard.cache_clear()
    yield tmp_path
    if cli_models.guard.cache_info().currsize:
        cli_models.guard().close()
    cli_models.guard.cache_clear()


def _seed(n: int) -> None:
    g = cli_models.guard()
    g.create_schema()
    t = cli_models.customer
    cli_models.metadata.create_all(g.engine)
    rows = [
        g.crypto.prepare(t, {"id": f"u{i}", "phone": f"1380013{i:04d}", "address": f"addr {i}"})
        for i in range(n)
    ]
    with g.engine.begin() as conn:
        conn.execute(t.insert(), rows)


def test_keys_lifecycle(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "init")
    assert code == 0 and (project / "keys" / "keyring.json").is_file()
    code, _, err = run(capsys, "keys", "init")
    assert code == 1 and "exists" in err
    _seed(30)
    code, out, _ = run(capsys, "keys", "rotate", "field:cli_customer.phone", "--json")
    assert code == 0 and json.loads(out) == {"field:cli_customer.phone": 2}
    code, out, _ = run(capsys, "keys", "status", "--json")
    rows = {(r["column"], r["version"]): r["rows"] for r in json.loads(out) if r["keyset"]
            .startswith("field:")}  # fmt: skip
    assert rows == {("phone", 1): 30}
    code, _, err = run(capsys, "keys", "retire", "field:cli_customer.phone", "1")
    assert code == 1 and "30 rows are still encrypted" in err
    code, out, _ = run(capsys, "keys", "rewrap", "--json", "--batch-size", "7")
    report = {r["column"]: r for r in json.loads(out)}
    assert code == 0 and report["phone"]["rewrapped"] == 30 and report["phone"]["remaining"] == {}
    assert "address" not in report  # per-subject: moves with the subject KEK, not rewrap
    code, _, _ = run(capsys, "keys", "retire", "field:cli_customer.phone", "1")
    assert code == 0  # no row left under version 1 after the rewrap
    code, out, _ = run(capsys, "keys", "rotate", "index:blind")
    assert code == 0
    code, _, err = run(capsys, "keys", "retire", "index:blind", "1")
    assert code == 1 and "not rebuilt" in err and "cli_customer.address" in err
    code, out, _ = run(capsys, "keys", "rebuild-index", "--json")
    (rebuilt,) = json.loads(out)
    assert code == 0 and rebuilt["column"] == "address" and rebuilt["index_version"] == 2
    assert rebuilt["scanned"] == 30 and rebuilt["failed"] == 0 and rebuilt["updated"] >= 25
    code, _, err = run(capsys, "keys", "retire", "index:blind", "1")
    assert code == 0, err
    code, out, _ = run(capsys, "keys", "list", "--json")
    names = [k["name"] for k in json.loads(out)]
    assert "field:cli_customer.phone" in names and not any(n.startswith("subject:") for n in names)
    code, out, _ = run(capsys, "keys", "shred", "u3", "--json")
    shred = json.loads(out)
    assert (
        code == 0
        and shred["backups_protected"]
        and shred["indexes_cleared"] == {"cli_customer.address_bidx": 1}
    )
    code, out, _ = run(capsys, "keys", "export", str(project / "backup.json"))
    assert code == 0
    assert stat.S_IMODE((project / "backup.json").stat().st_mode) == 0o600
    code, _, err = run(capsys, "keys", "export", str(project / "backup.json"))
    assert code == 2 and "exists" in err
    g = cli_models.guard()
    with g.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM rg_crypto_key"))
        conn.execute(sa.text("DELETE FROM rg_crypto_keyset"))
    code, out, _ = run(capsys, "keys", "import", str(project / "backup.json"), "--json")
    assert code == 0 and json.loads(out)["keys_added"] >= 3
    g.crypto.keyring.invalidate()
    t = cli_models.customer
    with g.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == "u5")).mappings().one()
    assert g.crypto.reveal(t, row)["phone"] == "13800130005"


def test_keys_usage_errors(project: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("RISKGUARD_KEYRING_PASSPHRASE")
    code, _, err = run(capsys, "keys", "init")
    assert code == 2 and "RISKGUARD_KEYRING_PASSPHRASE" in err
    code, _, err = run(capsys, "keys", "status", "--models", "no.such.module")
    assert code == 2 and "no.such.module" in err
    monkeypatch.setenv("RISKGUARD_KEYRING_PASSPHRASE", PASS)
    assert run(capsys, "keys", "init")[0] == 0
    monkeypatch.setenv("RISKGUARD_KEYRING_PASSPHRASE", "a wrong passphrase!")
    code, _, err = run(capsys, "keys", "list")
    assert code == 1 and "passphrase" in err and PASS not in err
