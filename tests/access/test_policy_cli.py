"""``riskguard policy …`` as a security team runs it: test, explain, diff, least-privilege.

Exit codes: 0 ok, 1 findings or failures, 2 usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from riskguard.config import load_settings
from riskguard.guard import Guard
from tests._cli import run

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = str(POLICIES / "model.conf")
POLICY = str(POLICIES / "policy.csv")
TESTS = str(POLICIES / "tests")


def _shipped(*args: str) -> list[str]:
    return [*args, "--model", MODEL, "--policy", POLICY]


# -- policy test ------------------------------------------------------------------------


def test_shipped_tests_pass_with_full_rule_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *_shipped("policy", "test", TESTS, "--min-coverage", "100"))
    assert code == 0, out
    assert "rule coverage 100.0%" in out
    code, out, _ = run(capsys, *_shipped("policy", "test", TESTS, "--json"))
    doc = json.loads(out)
    assert code == 0
    assert doc["failed"] == 0 and doc["cases"] == doc["passed"] >= 90
    assert doc["coverage"] == 100.0 and doc["uncovered"] == [] and doc["rules"] == 71


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


CASE = """
[[case]]
name = "{name}"
sub = "{sub}"
dom = "m:1001"
obj = "{obj}"
act = "read"
owner = "alice"
expect = "{expect}"
"""


def test_a_wrong_expectation_fails_and_names_the_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _write(
        tmp_path / "t.toml",
        "# header\n"
        + CASE.format(name="own order", sub="alice", obj="order", expect="allow")
        + CASE.format(name="merchant sees phone", sub="sam", obj="customer.phone", expect="allow"),
    )
    code, out, _ = run(capsys, *_shipped("policy", "test", f, "--json"))
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    (bad,) = [r for r in doc["results"] if not r["passed"]]
    assert bad["name"] == "merchant sees phone"
    assert bad["location"] == "t.toml:12"  # the line of its [[case]]
    assert bad["actual"] == "deny" and "policy.csv:35" in bad["reason"]
    code, out, _ = run(capsys, *_shipped("policy", "test", f))
    assert code == 1 and "FAIL t.toml:12 merchant sees phone" in out


def test_coverage_lists_unexercised_rules_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _write(tmp_path / "t.toml", CASE.format(name="n", sub="alice", obj="order", expect="allow"))
    code, out, _ = run(capsys, *_shipped("policy", "test", f, "--json"))
    doc = json.loads(out)
    assert code == 0  # no gate: passing cases are enough
    assert doc["rules"] == 71 and len(doc["uncovered"]) == 70
    assert "policy.csv:48" not in [u["location"] for u in doc["uncovered"]]
    assert {"location": "policy.csv:26", "rule": "p, suspended, *, *, *, *, deny"} in doc[
        "uncovered"
    ]
    code, out, _ = run(capsys, *_shipped("policy", "test", f, "--min-coverage", "50"))
    assert code == 1 and "below --min-coverage 50" in out
    code, _, _ = run(capsys, *_shipped("policy", "test", f, "--min-coverage", "1"))
    assert code == 0


@pytest.mark.parametrize(
    "body,message,line",
    [
        (CASE.format(name="n", sub="nobody", obj="order", expect="allow"), "unknown subject", 2),
        (CASE.format(name="n", sub="alice", obj="orders", expect="allow"), "unknown object", 2),
        (CASE.format(name="n", sub="alice", obj="order", expect="maybe"), "expect is", 2),
        (CASE.replace('owner = "alice"', 'ownr = "alice"').format(
            name="n", sub="alice", obj="order", expect="allow"), "unknown key 'ownr'", 2),
        (CASE.replace('act = "read"\n', "").format(
            name="n", sub="alice", obj="order", expect="allow"), "has no act", 2),
        ("[[case]]\nsub = alice\n", "not valid TOML", 2),
    ],
    ids=["unknown-subject", "unknown-object", "bad-expect", "unknown-key", "missing", "toml"],
)  # fmt: skip
def test_bad_test_files_are_errors_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str, line: int
) -> None:
    f = _write(tmp_path / "bad.toml", body)
    code, _, err = run(capsys, *_shipped("policy", "test", f))
    assert code == 1
    assert message in err and f"bad.toml:{line}" in err


def test_missing_test_folder_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *_shipped("policy", "test", str(tmp_path / "none")))
    assert code == 1 and "does not exist" in err
    code, _, err = run(capsys, *_shipped("policy", "test", str(tmp_path)))
    assert code == 1 and "no *.toml" in err


# -- policy explain ---------------------------------------------------------------------


def test_explain_a_deny_that_overrides_an_allow(capsys: pytest.CaptureFixture[str]) -> None:
    args = _shipped("policy", "explain", "dave", "m:1001", "order", "read", "--owner", "dave")
    code, out, _ = run(capsys, *args, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["decision"] == "deny"
    assert doc["rule"]["location"] == "policy.csv:26"
    assert doc["rule"]["via"] == "dave → suspended"
    assert [o["location"] for o in doc["overridden"]] == ["policy.csv:48"]
    assert doc["roles"]["customer"]["chain"] == "dave → customer"
    assert doc["nearest"] is None
    code, out, _ = run(capsys, *args)
    assert code == 1
    assert "denied by policy.csv:26, overriding policy.csv:48" in out
    assert "the deny overrides policy.csv:48" in out


def test_explain_an_allow_through_a_role_chain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, *_shipped("policy", "explain", "mona", "m:1001", "order", "read", "--json")
    )
    doc = json.loads(out)
    assert code == 0 and doc["allowed"] is True
    assert doc["rule"]["location"] == "policy.csv:76"
    assert doc["rule"]["via"] == "mona → merchant_owner → merchant_staff"
    assert doc["roles"]["merchant_staff"]["grants"] == ["policy.csv:163", "policy.csv:149"]
    code, out, _ = run(capsys, *_shipped("policy", "explain", "sean", "platform", "audit.log",
                                         "read"))  # fmt: skip
    assert code == 0
    assert "sean → security_admin → auditor" in out and "allowed by policy.csv:113" in out


def test_explain_a_deny_without_a_rule_names_the_nearest_rule_and_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _shipped("policy", "explain", "rick", "m:1001", "order", "read")
    code, out, _ = run(capsys, *args, "--owner", "alice", "--assignee", "rita", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["rule"] is None and doc["reason"] == "denied: no rule allows it"
    assert doc["nearest"]["location"] == "policy.csv:64"
    assert [f["field"] for f in doc["nearest"]["failed"]] == ["cond"]
    code, out, _ = run(capsys, *_shipped("policy", "explain", "alice", "m:1001", "order",
                                         "refund", "--owner", "alice"))  # fmt: skip
    assert code == 1
    assert "nearest rule policy.csv:47" in out
    assert "fails on act: the rule has 'create', the request 'refund'" in out


def test_explain_a_subject_without_grants(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, *_shipped("policy", "explain", "mallory", "m:1001", "order", "read", "--json")
    )
    doc = json.loads(out)
    assert code == 1 and doc["roles"] == {}
    assert doc["nearest"]["failed"][0]["field"] == "sub"


# -- policy diff ------------------------------------------------------------------------


def test_diff_reports_added_and_removed_grants_with_verified_witnesses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = Path(POLICY).read_text(encoding="utf-8")
    refund = "p, merchant_owner, *, order, refund, *, allow\n"
    new = text.replace(refund, refund + "p, merchant_staff, *, order, refund, *, allow\n").replace(
        "g, security_admin, auditor, *\n", ""
    )
    f = _write(tmp_path / "new.csv", new)
    code, out, _ = run(capsys, "policy", "diff", POLICY, f, "--model", MODEL, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["differs"] is True
    (added,) = doc["added"]
    assert added["line"] == "p, merchant_staff, *, order, refund, *, allow"
    w = added["witness"]
    assert (w["old"], w["new"]) == ("deny", "allow")
    assert w["request"]["obj"] == "order" and w["request"]["act"] == "refund"
    (removed,) = doc["removed"]
    assert removed["location"] == "policy.csv:143"
    assert (removed["witness"]["old"], removed["witness"]["new"]) == ("allow", "deny")
    # the witnesses really are decided differently
    from riskguard.access import AccessControl

    old_ac, new_ac = AccessControl(MODEL, POLICY), AccessControl(MODEL, f)
    for c in (added, removed):
        r = c["witness"]["request"]
        args = (r.pop("sub"), r.pop("dom"), r.pop("obj"), r.pop("act"))
        assert old_ac.enforce(*args, **r) != new_ac.enforce(*args, **r)


def test_diff_of_a_change_with_no_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = Path(POLICY).read_text(encoding="utf-8")
    f = _write(tmp_path / "new.csv", text + "p, customer, *, menu.item, read, owner, allow\n")
    code, out, _ = run(capsys, "policy", "diff", POLICY, f, "--model", MODEL)
    assert code == 0
    assert "+ new.csv:172" in out and "no request found" in out
    code, out, _ = run(capsys, "policy", "diff", POLICY, POLICY, "--model", MODEL)
    assert code == 0 and "no changes" in out


# -- policy least-privilege -------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "init", str(tmp_path))[0] == 0
    with Guard(load_settings(tmp_path / "riskguard.toml")) as guard:
        ac = guard.access
        for _ in range(3):
            ac.decide("alice", "m:1001", "order", "read", owner="alice")
            ac.decide("rick", "m:1001", "order", "read", owner="alice", assignee="rick")
            ac.decide("mona", "m:1001", "order", "refund")
            ac.decide("aude", "platform", "audit.log", "read")
            ac.decide("alice", "m:1001", "order", "read", owner="bob")  # a deny
    return tmp_path


def test_least_privilege_from_audited_decisions(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(project / "riskguard.toml")
    out_file = project / "reduced.csv"
    code, out, _ = run(capsys, "--config", cfg, "policy", "least-privilege", "--since", "90d",
                       "--out", str(out_file), "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 1  # unused grants found
    assert doc["observed"] == 15 and doc["observed_allows"] == 12 and doc["verified"] is True
    unused = {u["rule"] for u in doc["unused_rules"]}
    assert "p, customer, *, order, create, owner, allow" in unused
    assert "p, customer, *, order, read, owner, allow" not in unused
    grants = {g["grant"] for g in doc["unused_grants"]}
    assert "g, carl, cs_agent, *" in grants and "g, alice, customer, *" not in grants
    assert "cs_agent" in doc["unused_roles"] and "customer" not in doc["unused_roles"]
    reduced = out_file.read_text(encoding="utf-8")
    assert "p, suspended, *, *, *, *, deny" in reduced  # denies are always kept
    assert "g, risk_analyst, pii_blocked, *" in reduced  # and inherited denies
    # diff proves the reduction: only removals, none allows anything new
    code, out, _ = run(capsys, "policy", "diff", str(project / "policies" / "policy.csv"),
                       str(out_file), "--model", MODEL, "--json")  # fmt: skip
    d = json.loads(out)
    assert code == 1 and d["added"] == []
    assert all(r["witness"] is None or r["witness"]["new"] == "deny" for r in d["removed"])
    from riskguard.access import AccessControl

    small = AccessControl(MODEL, out_file)
    assert small.enforce("alice", "m:1001", "order", "read", owner="alice")
    assert small.enforce("rick", "m:2001", "order", "read", owner="x", assignee="rick")
    assert small.enforce("mona", "m:1001", "order", "refund")
    assert small.enforce("aude", "platform", "audit.report", "read")
    assert not small.enforce("alice", "m:1001", "order", "create", owner="alice")
    assert not small.enforce("carl", "m:1001", "order", "read")


def test_least_privilege_with_a_bad_window_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(project / "riskguard.toml")
    code, _, err = run(capsys, "--config", cfg, "policy", "least-privilege", "--since", "soon")
    assert code == 2 and "90d" in err
