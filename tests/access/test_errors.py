"""Bad model and policy files: one PolicyError per defect, naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskguard.access import AccessControl, MemoryPolicy
from riskguard.errors import PolicyError

POLICIES = Path(__file__).parents[2] / "policies"
MODEL_TEXT = (POLICIES / "model.conf").read_text()
POLICY_TEXT = (POLICIES / "policy.csv").read_text()

SIMPLE_MODEL = """\
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act, eft

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
"""


def _load(tmp_path: Path, model: str, policy: str = "p, a, d, o, read, allow\n") -> None:
    (tmp_path / "model.conf").write_text(model, encoding="utf-8")
    (tmp_path / "policy.csv").write_text(policy, encoding="utf-8")
    AccessControl(tmp_path / "model.conf", tmp_path / "policy.csv")


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


MODEL_DEFECTS = [
    # (name, replace this, with this, line holding it, words in the message)
    ("no equals sign", "r = sub, dom, obj, act", "r sub, dom, obj, act", "r sub", "key = value"),
    ("unknown section", "[matchers]", "[matcher]", "[matcher]", "unknown section"),
    ("unknown key", "e = some", "effect = some", "effect = ", "unknown key"),
    ("bad token", "r = sub, dom, obj, act", "r = sub, dom, obj act", "r = ", "token"),
    ("twice", "g = _, _, _", "g = _, _, _\ng = _, _", "g = _, _\n", "twice"),
    ("bad role def", "g = _, _, _", "g = _", "g = _", "role definition"),
    ("effect", "p.eft == deny))", "p.eft == block))", "e = ", "unsupported policy effect"),
    ("syntax", "r.act == p.act", "r.act == == p.act", "m = ", "not a valid expression"),
    ("unknown token", "r.obj == p.obj", "r.object == p.obj", "m = ", "'r.object'"),
    ("unknown function", "r.obj == p.obj", "keyMatch9(r.obj, p.obj)", "m = ", "keyMatch9"),
    ("outside section", "[request_definition]\n", "", "r = ", "outside any [section]"),
]


@pytest.mark.parametrize(
    "old,new,at,words", [d[1:] for d in MODEL_DEFECTS], ids=[d[0] for d in MODEL_DEFECTS]
)
def test_model_defects_name_file_and_line(
    tmp_path: Path, old: str, new: str, at: str, words: str
) -> None:
    text = SIMPLE_MODEL.replace(old, new, 1)
    assert text != SIMPLE_MODEL
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, text)
    assert words in err.value.message
    assert err.value.path == str(tmp_path / "model.conf")
    expected = _line(text, at.rstrip("\n")) if not at.endswith("\n") else None
    if at.endswith("\n"):  # the second definition
        expected = next(n for n, line in enumerate(text.splitlines(), 1) if line == at[:-1])
    assert err.value.line == expected
    assert f"model.conf:{expected}" in str(err.value)


def test_missing_section_names_the_file(tmp_path: Path) -> None:
    text = SIMPLE_MODEL.split("[matchers]")[0]
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, text)
    assert "m = ..." in err.value.message and err.value.path == str(tmp_path / "model.conf")


def test_request_without_sub_obj_act_is_refused(tmp_path: Path) -> None:
    text = SIMPLE_MODEL.replace("r = sub, dom, obj, act", "r = who, dom, obj, act").replace(
        "r.sub", "r.who"
    )
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, text)
    assert "sub" in err.value.message and err.value.line == 2


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        AccessControl(tmp_path / "nope.conf", MemoryPolicy("p, a, d, o, read, allow"))
    assert err.value.path == str(tmp_path / "nope.conf")


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        AccessControl(POLICIES / "model.conf", tmp_path / "nope.csv")
    assert err.value.path == str(tmp_path / "nope.csv") and "cannot read" in err.value.message


POLICY_DEFECTS = [
    ("too few fields", "p, customer, *, order, read, allow", "fields"),
    ("too many fields", "p, customer, *, order, read, owner, allow, x", "fields"),
    ("unknown effect", "p, customer, *, order, read, owner, permit", "unknown effect"),
    ("unknown condition", "p, customer, *, order, read, onwer, allow", "unknown condition"),
    ("short grant", "g, alice, customer", "grant has 2 fields"),
    ("long grant", "g, alice, customer, *, extra", "grant has 4 fields"),
    ("unknown type", "q, alice, customer, *", "unknown policy type 'q'"),
    ("no type", ", alice, customer, *", "policy type"),
    ("unbalanced", "p, customer), *, order, read, *, allow", "unbalanced"),
    ("cycle", "g, merchant_staff, merchant_owner, m:1001", "role cycle"),
    ("self cycle", "g, auditor, auditor, *", "role cycle"),
]


@pytest.mark.parametrize(
    "bad,words", [d[1:] for d in POLICY_DEFECTS], ids=[d[0] for d in POLICY_DEFECTS]
)
def test_policy_defects_name_file_and_line(tmp_path: Path, bad: str, words: str) -> None:
    lines = POLICY_TEXT.splitlines()
    at = 40
    text = "\n".join([*lines[: at - 1], bad, *lines[at - 1 :]]) + "\n"
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, MODEL_TEXT, text)
    assert words in err.value.message
    assert err.value.path == str(tmp_path / "policy.csv")
    if "cycle" in words:  # named by the line closing it in file order; every line in the hint
        assert err.value.hint is not None and f"policy.csv:{at}," in err.value.hint + ","
        assert err.value.line is not None and err.value.line >= at
    else:
        assert err.value.line == at
        assert f"policy.csv:{at}" in str(err.value)


def test_cycle_lists_its_lines(tmp_path: Path) -> None:
    text = "p, a, *, o, read, *, allow\ng, x, y, d\ng, y, z, d\ng, z, x, d\ng, z, x, e\n"
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, MODEL_TEXT, text)
    assert err.value.message == "role cycle: x → y → z → x"
    assert err.value.line == 4
    assert err.value.hint == "lines policy.csv:2, policy.csv:3, policy.csv:4"


def test_links_in_different_domains_are_not_a_cycle(tmp_path: Path) -> None:
    _load(tmp_path, MODEL_TEXT, "p, a, *, o, read, *, allow\ng, x, y, d1\ng, y, x, d2\n")


def test_a_policy_without_rules_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        _load(tmp_path, MODEL_TEXT, "# nothing\ng, alice, customer, *\n")
    assert "no p rule" in err.value.message


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "model.conf").write_text(MODEL_TEXT, encoding="utf-8")
    (tmp_path / "policy.csv").write_bytes(
        b"p, a, *, o, read, *, allow\np, \xff, *, o, r, *, allow\n"
    )
    with pytest.raises(PolicyError) as err:
        AccessControl(tmp_path / "model.conf", tmp_path / "policy.csv")
    assert err.value.line == 2 and "UTF-8" in err.value.message
