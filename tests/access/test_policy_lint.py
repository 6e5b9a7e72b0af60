"""``riskguard policy lint``: every planted defect in ``lint_corpus/`` is found, at its
line, and the shipped policies are clean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from riskguard.access._lint import KINDS
from tests._cli import run

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = str(POLICIES / "model.conf")
CORPUS = Path(__file__).parent / "lint_corpus"
SCHEMA = str(CORPUS / "resources.toml")
_EXPECT = re.compile(r"^# expect: (\w+) at line (\d+)", re.M)


def _planted() -> list[tuple[Path, str, int]]:
    out = []
    for f in sorted(CORPUS.glob("*.csv")):
        m = _EXPECT.search(f.read_text(encoding="utf-8"))
        if m:
            out.append((f, m.group(1), int(m.group(2))))
    return out


PLANTED = _planted()


def test_the_corpus_plants_every_kind() -> None:
    assert {kind for _, kind, _ in PLANTED} == set(KINDS)


@pytest.mark.parametrize("path,kind,line", PLANTED, ids=[p.stem for p, _, _ in PLANTED])
def test_each_planted_defect_is_found_at_its_line(
    capsys: pytest.CaptureFixture[str], path: Path, kind: str, line: int
) -> None:
    code, out, _ = run(capsys, "policy", "lint", "--model", MODEL, "--policy", str(path),
                       "--resources", SCHEMA, "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert [(f["kind"], f["line"]) for f in doc["findings"]] == [(kind, line)]
    assert doc["findings"][0]["location"] == f"{path.name}:{line}"


def test_the_clean_corpus_policy_has_no_findings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "lint", "--model", MODEL, "--policy",
                       str(CORPUS / "clean.csv"), "--resources", SCHEMA)  # fmt: skip
    assert code == 0 and "no findings" in out


def test_the_shipped_policies_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    # resources.toml beside policy.csv is picked up by default
    code, out, _ = run(capsys, "policy", "lint", "--model", MODEL, "--policy",
                       str(POLICIES / "policy.csv"), "--json")  # fmt: skip
    assert code == 0 and json.loads(out) == {"ok": True, "findings": []}


def test_the_shipped_schema_is_what_catches_an_unknown_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.csv"
    text = (POLICIES / "policy.csv").read_text(encoding="utf-8")
    policy.write_text(text + "p, auditor, platform, policy, export, *, allow\n", encoding="utf-8")
    (tmp_path / "resources.toml").write_bytes((POLICIES / "resources.toml").read_bytes())
    code, out, _ = run(capsys, "policy", "lint", "--model", MODEL, "--policy", str(policy))
    assert code == 1 and "policy.csv:172: unknown_action" in out


def test_a_model_parse_error_is_a_finding_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.conf"
    text = Path(MODEL).read_text(encoding="utf-8")
    model.write_text(text.replace("[matchers]", "[matcher]"), encoding="utf-8")
    code, out, _ = run(capsys, "policy", "lint", "--model", str(model), "--policy",
                       str(CORPUS / "clean.csv"), "--json")  # fmt: skip
    (f,) = json.loads(out)["findings"]
    assert code == 1 and f["kind"] == "parse" and "unknown section" in f["message"]
    assert f["line"] == text.split("\n").index("[matchers]") + 1


def test_a_malformed_schema_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "resources.toml"
    bad.write_text("[objects.order]\nactions = read\n", encoding="utf-8")
    code, _, err = run(capsys, "policy", "lint", "--model", MODEL, "--policy",
                       str(CORPUS / "clean.csv"), "--resources", str(bad))  # fmt: skip
    assert code == 1 and "resources.toml:2" in err
