"""``riskguard audit …`` as an auditor runs it: exit codes 0 intact, 1 damaged, 2 usage."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from riskguard.audit import TrustedKey, generate_signing_key, parse_checkpoint
from riskguard.config import load_settings
from riskguard.context import Principal, request_context
from riskguard.guard import Guard
from riskguard.types import ResourceRef
from tests._cli import run


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An initialised project with 250 events and checkpoints every 100."""
    assert run(capsys, "init", str(tmp_path))[0] == 0
    cfg = tmp_path / "riskguard.toml"
    text = cfg.read_text().replace(
        "checkpoint_every_events = 1000", "checkpoint_every_events = 100"
    )
    cfg.write_text(text.replace("checkpoint_every_seconds = 3600", "checkpoint_every_seconds = 0"))
    with Guard(load_settings(cfg)) as guard:
        for i in range(250):
            who = Principal(f"u-{i % 5}", domain="m-1")
            with request_context(who):
                action = "auth.login" if i % 2 else "order.read"
                guard.audit.record(action, "success", resource=ResourceRef("order", f"o-{i}"),
                                   details={"i": i})  # fmt: skip
    return tmp_path


def _rg(project: Path, *args: str) -> list[str]:
    return ["--config", str(project / "riskguard.toml"), *args]


def test_verify_database_intact_then_damaged(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--json"))
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"ok", "checked", "first_bad_seq", "kind", "detail"}
    assert (report["ok"], report["checked"], report["first_bad_seq"], report["kind"]) == (
        True, 250, None, None,
    )  # fmt: skip
    assert "250 events and 2 checkpoints verified" in report["detail"]
    with sqlite3.connect(project / "riskguard.db") as conn:
        conn.execute("UPDATE rg_audit_event SET outcome='failure' WHERE seq=77")
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--json"))
    report = json.loads(out)
    assert code == 1
    assert (report["ok"], report["first_bad_seq"], report["kind"]) == (False, 77, "modified")
    code, out, _ = run(capsys, *_rg(project, "audit", "verify"))
    assert code == 1 and "DAMAGED" in out and "seq 77" in out


def test_export_then_offline_verify_needs_only_the_public_key(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    out_file = project / "export.jsonl"
    assert run(capsys, *_rg(project, "audit", "checkpoint"))[0] == 0
    assert run(capsys, *_rg(project, "audit", "export", "--out", str(out_file)))[0] == 0
    # Elsewhere: only the export and the public key, no config, no database.
    elsewhere = tmp_path_factory.mktemp("auditor")
    (elsewhere / "export.jsonl").write_bytes(out_file.read_bytes())
    (elsewhere / "pub.pem").write_bytes((project / "keys" / "audit-signing.pub.pem").read_bytes())
    args = ["audit", "verify", "--file", str(elsewhere / "export.jsonl"),
            "--public-key", str(elsewhere / "pub.pem"), "--json"]  # fmt: skip
    code, out, _ = run(capsys, *args)
    assert code == 0 and json.loads(out)["checked"] == 250
    lines = (elsewhere / "export.jsonl").read_bytes().split(b"\n")
    del lines[-10]  # an event line near the end
    (elsewhere / "export.jsonl").write_bytes(b"\n".join(lines))
    code, out, _ = run(capsys, *args)
    report = json.loads(out)
    assert code == 1 and report["kind"] == "deleted" and report["first_bad_seq"] == 242


def test_offline_verify_without_a_key_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = project / "export.jsonl"
    run(capsys, *_rg(project, "audit", "export", "--out", str(out_file)))
    code, _, err = run(capsys, "audit", "verify", "--file", str(out_file))
    assert code == 2 and "--public-key" in err and "Traceback" not in err
    code, _, err = run(capsys, "audit", "verify", "--file", str(project / "nope.jsonl"),
                       "--public-key", str(project / "keys" / "audit-signing.pub.pem"))  # fmt: skip
    assert code == 2 and "does not exist" in err


def test_truncation_is_found_with_a_checkpoint_the_auditor_kept(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, note, _ = run(capsys, *_rg(project, "audit", "checkpoint"))
    assert code == 0
    kept = project / "kept.note"
    kept.write_text(note)
    with sqlite3.connect(project / "riskguard.db") as conn:
        conn.execute("DELETE FROM rg_audit_event WHERE seq > 240")
        conn.execute("DELETE FROM rg_audit_checkpoint WHERE tree_size > 240")
        conn.execute("UPDATE rg_audit_head SET seq = 240")
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--json"))
    assert code == 0  # without the kept checkpoint, a clean cut is invisible
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--json", "--checkpoint",
                                    str(kept)))  # fmt: skip
    report = json.loads(out)
    assert code == 1 and (report["kind"], report["first_bad_seq"]) == ("truncated", 241)


def test_prove_and_check_proof_offline(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, *_rg(project, "audit", "checkpoint"))
    proof = project / "proof.json"
    assert run(capsys, *_rg(project, "audit", "prove", "123", "--out", str(proof)))[0] == 0
    doc = json.loads(proof.read_text())
    assert doc["bytes"] < 1024 and doc["inclusion"]["seq"] == 123
    pub = str(project / "keys" / "audit-signing.pub.pem")
    code, out, _ = run(capsys, "audit", "check-proof", str(proof), "--public-key", pub, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    # Changing the proof, or pairing it with an unsigned root, fails.
    doc["inclusion"]["seq"] = 124
    proof.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "audit", "check-proof", str(proof), "--public-key", pub, "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    doc["inclusion"]["seq"] = 123
    doc["checkpoint"] = doc["checkpoint"].split("\n\n")[0] + "\n\n"
    proof.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "audit", "check-proof", str(proof), "--public-key", pub, "--json")
    assert code == 1 and "checkpoint" in json.loads(out)["detail"]


def test_consistency_proof_between_checkpoints(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = project / "cons.json"
    args = _rg(project, "audit", "prove", "--consistency", "100", "200", "--out", str(proof))
    assert run(capsys, *args)[0] == 0
    pub = str(project / "keys" / "audit-signing.pub.pem")
    code, out, _ = run(capsys, "audit", "check-proof", str(proof), "--public-key", pub)
    assert code == 0 and "prefix" in out
    code, _, err = run(capsys, *_rg(project, "audit", "prove", "--consistency", "100", "150"))
    assert code == 2 and "checkpointed sizes" in err


def test_tail_and_search(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *_rg(project, "audit", "tail", "-n", "3", "--json"))
    assert code == 0 and [json.loads(x)["seq"] for x in out.splitlines()] == [248, 249, 250]
    code, out, _ = run(capsys, *_rg(project, "audit", "search", "--action", "auth.*",
                                    "--actor", "u-1", "--json"))  # fmt: skip
    found = [json.loads(x) for x in out.splitlines()]
    assert found and all(e["action"] == "auth.login" and e["actor"]["id"] == "u-1" for e in found)
    assert len(found) == 25  # i = 1 (mod 10)
    code, out, _ = run(capsys, *_rg(project, "audit", "search", "--resource-id", "o-7", "--json"))
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [8]
    code, out, _ = run(capsys, *_rg(project, "audit", "search", "--since", "2999-01-01", "--json"))
    assert code == 0 and out == ""
    code, _, err = run(capsys, *_rg(project, "audit", "search", "--since", "yesterday"))
    assert code == 2 and "ISO 8601" in err


def test_keygen_refuses_to_overwrite(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = project / "keys" / "audit-signing.pem"
    before = key.read_bytes()
    code, _, err = run(capsys, *_rg(project, "audit", "keygen"))
    assert code == 2 and "refusing" in err and key.read_bytes() == before
    new = project / "keys" / "audit-2027.pem"
    assert run(capsys, *_rg(project, "audit", "keygen", "--out", str(new)))[0] == 0
    assert new.stat().st_mode & 0o777 == 0o600
    assert (project / "keys" / "audit-2027.pub.pem").is_file()


def test_missing_signing_key_is_a_config_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "keys" / "audit-signing.pem").unlink()
    code, _, err = run(capsys, *_rg(project, "audit", "checkpoint"))
    assert code == 2 and "signing key" in err and "keygen" in err


def _proof(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    run(capsys, *_rg(project, "audit", "checkpoint"))
    out = project / "p.json"
    assert run(capsys, *_rg(project, "audit", "prove", *args, "--out", str(out)))[0] == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _check(
    project: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any], *extra: str
) -> tuple[int, dict[str, Any]]:
    f = project / "check.json"
    f.write_text(json.dumps(doc))
    pub = str(project / "keys" / "audit-signing.pub.pem")
    code, out, _ = run(capsys, "audit", "check-proof", str(f), "-k", pub, "--json", *extra)
    return code, json.loads(out)


def test_a_proof_under_a_checkpoint_signed_by_another_key_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forger who re-signs the checkpoint with a key of his own gets nowhere."""
    doc = _proof(project, capsys, "40")
    cp = parse_checkpoint(doc["checkpoint"]).checkpoint
    doc["checkpoint"] = cp.sign([generate_signing_key("audit-signing")]).note
    code, report = _check(project, capsys, doc)
    assert code == 1 and "unknown_key" in report["detail"]


def test_a_proof_for_another_event_hash_or_log_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _proof(project, capsys, "40")
    assert _check(project, capsys, doc, "--log-id", "riskguard/audit")[0] == 0
    code, report = _check(project, capsys, doc, "--event-hash", "00" * 32)
    assert code == 1 and "another event hash" in report["detail"]
    code, report = _check(project, capsys, doc, "--log-id", "other/log")
    assert code == 1 and "not 'other/log'" in report["detail"]


def test_a_changed_or_swapped_consistency_proof_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _proof(project, capsys, "--consistency", "100", "200")
    assert _check(project, capsys, doc)[0] == 0
    changed = json.loads(json.dumps(doc))
    changed["consistency"]["path"][0] = "A" * 43 + "="
    code, report = _check(project, capsys, changed)
    assert code == 1 and "not consistent" in report["detail"]
    swapped = {**doc, "first": doc["second"], "second": doc["first"]}
    code, report = _check(project, capsys, swapped)
    assert code == 1 and "do not match" in report["detail"]


def test_verify_with_a_key_history_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = (project / "keys" / "audit-signing.pem").read_bytes()
    key = TrustedKey.from_pem(pem, "audit-signing")
    history = project / "history.toml"
    history.write_text(f'[[key]]\nname = "audit-signing"\npublic_key = "{key.verifier_key()}"\n')
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--keys", str(history), "--json"))
    assert code == 0 and json.loads(out)["ok"] is True
    other = generate_signing_key("audit-signing").trusted()
    history.write_text(f'[[key]]\nname = "audit-signing"\npublic_key = "{other.verifier_key()}"\n')
    code, out, _ = run(capsys, *_rg(project, "audit", "verify", "--keys", str(history), "--json"))
    assert code == 1 and json.loads(out)["kind"] == "unknown_key"


def test_archive_command(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = project / "old.jsonl"
    code, text, _ = run(capsys, *_rg(project, "audit", "archive", "--out", str(out)))
    assert code == 0 and "nothing to archive" in text and not out.exists()
    code, _, err = run(capsys, *_rg(project, "audit", "archive", "--out", str(out),
                                    "--older-than-days", "10"))  # fmt: skip
    assert code == 2 and "at least 183 days" in err and not out.exists()
