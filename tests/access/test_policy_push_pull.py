"""``riskguard policy push`` / ``pull``: the policy in the database, from and to CSV.

Exit codes: 0 ok, 1 invalid policy, nothing stored, or a storage error; 2 usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from riskguard.access import (
    AccessControl,
    FilePolicy,
    RedisReloadListener,
    SqlPolicy,
    parse_policy_text,
)
from tests._cli import run
from tests.conftest import RedisNamespace, SqlNamespace
from tests.doubles import RecordingAudit

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = POLICIES / "model.conf"
POLICY = POLICIES / "policy.csv"
WAIT = 10.0


def _config(tmp_path: Path, url: str, redis: RedisNamespace | None = None) -> str:
    cfg = tmp_path / "riskguard.toml"
    text = f'[database]\nurl = "{url}"\n\n[access]\nmodel = "{MODEL}"\npolicy = "{POLICY}"\n'
    if redis is not None:
        text += f'\n[redis]\nurl = "{redis.url}"\nprefix = "{redis.prefix}"\n'
    cfg.write_text(text, encoding="utf-8")
    return str(cfg)


def test_push_then_pull_round_trips_with_positions(
    sql_schema: SqlNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sql_schema.url)
    code, out, err = run(capsys, "--config", cfg, "policy", "push")
    original = FilePolicy(POLICY).load()
    assert code == 0, err
    assert f"stored {len(original)} lines of {POLICY} as sql:default version 1" in out
    assert "no reload notice sent (no [redis] url)" in out
    code, out, _ = run(capsys, "--config", cfg, "policy", "pull")
    assert code == 0
    pulled = parse_policy_text(out)
    assert [(pl.ptype, pl.values) for pl in pulled] == [(pl.ptype, pl.values) for pl in original]
    assert [pl.line for pl in pulled] == [pl.line for pl in SqlPolicy(sql_schema.engine).load()]
    # what was pulled pushes back to the same policy
    again = tmp_path / "pulled.csv"
    again.write_text(out, encoding="utf-8")
    code, out, _ = run(capsys, "--config", cfg, "policy", "push", str(again), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["version"] == 2 and doc["lines"] == len(original)
    assert doc["hash"] == AccessControl(MODEL, POLICY).policy_hash
    assert doc["notified"] is None and doc["name"] == "default"


def test_push_refuses_an_invalid_policy_and_stores_nothing(
    sql_schema: SqlNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sql_schema.url)
    assert run(capsys, "--config", cfg, "policy", "push")[0] == 0
    bad = tmp_path / "bad.csv"
    text = POLICY.read_text(encoding="utf-8") + "p, customer, *, order, read, owner, alow\n"
    bad.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "--config", cfg, "policy", "push", str(bad))
    assert code == 1
    assert "unknown effect 'alow'" in err and f"bad.csv:{text.count(chr(10))}" in err
    store = SqlPolicy(sql_schema.engine)
    assert store.version() == 1
    assert [pl.values for pl in store.load()] == [pl.values for pl in FilePolicy(POLICY).load()]


def test_push_and_pull_name_a_policy(
    sql_schema: SqlNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sql_schema.url)
    small = tmp_path / "small.csv"
    small.write_text("p, r, *, o, read, *, allow\ng, u, r, *\n", encoding="utf-8")
    code, _, err = run(capsys, "--config", cfg, "policy", "push", str(small), "--name", "Staging")
    assert code == 0, err
    out_file = tmp_path / "out.csv"
    args = ("--config", cfg, "policy", "pull", "--name", "Staging")
    code, out, _ = run(capsys, *args, "--out", str(out_file), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["version"] == 1 and doc["out"] == str(out_file)
    assert doc["lines"] == [
        {"line": 1, "ptype": "p", "values": ["r", "*", "o", "read", "*", "allow"]},
        {"line": 2, "ptype": "g", "values": ["u", "r", "*"]},
    ]
    assert out_file.read_text(encoding="utf-8") == "p, r, *, o, read, *, allow\ng, u, r, *\n"
    code, _, err = run(capsys, "--config", cfg, "policy", "pull", "--name", "staging")
    assert code == 1 and "no access policy named 'staging'" in err
    code, _, err = run(capsys, "--config", cfg, "policy", "pull")
    assert code == 1 and "no access policy named 'default'" in err


def test_usage_errors_exit_2(
    sql_schema: SqlNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, sql_schema.url)
    code, _, err = run(capsys, "--config", cfg, "policy", "pull", "--name", "a/b")
    assert code == 2 and "policy name" in err
    code, _, err = run(capsys, "--config", str(tmp_path / "missing.toml"), "policy", "pull")
    assert code == 2 and "does not exist" in err


def test_push_without_the_tables_is_a_storage_error(
    sqlite_ns: SqlNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--config", _config(tmp_path, sqlite_ns.url), "policy", "push")
    assert code == 1 and "error[storage]" in err and "rg_access_policy" in err


def test_push_notifies_running_enforcers_through_redis(
    sql_schema: SqlNamespace,
    redis_ns: RedisNamespace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _config(tmp_path, sql_schema.url, redis_ns)
    assert run(capsys, "--config", cfg, "policy", "push", "--no-notify")[0] == 0
    audit = RecordingAudit()
    ac = AccessControl(MODEL, SqlPolicy(sql_schema.engine), audit=audit)
    first = ac.policy_hash
    edited = tmp_path / "edited.csv"
    edited.write_text(POLICY.read_text(encoding="utf-8") + "g, zoe, cs_agent, *\n")
    with RedisReloadListener.from_url(
        ac, redis_ns.url, prefix=redis_ns.prefix, name="default"
    ) as listener:
        code, out, err = run(capsys, "--config", cfg, "policy", "push", str(edited), "--json")
        doc = json.loads(out)
        assert code == 0, err
        assert doc["notified"] == 1 and doc["version"] == 2
        assert listener.wait_handled(1, WAIT)
        assert ac.policy_hash == doc["hash"] != first
        assert ac.enforce("zoe", "m:1001", "order", "read")
        # the same policy again: a new version, a notice, and no needless reload
        code, out, _ = run(capsys, "--config", cfg, "policy", "push", str(edited))
        assert code == 0 and f"{redis_ns.prefix}access:reload to 1 listener(s)" in out
        assert listener.wait_handled(2, WAIT)
    assert [e.outcome for e in audit.events if e.action == "policy.reload"] == ["success"]
