"""Policy lines are read as Casbin's file adapter reads them, with their line numbers."""

from __future__ import annotations

from pathlib import Path

import casbin
from casbin.persist.adapter import _extract_tokens
from hypothesis import given
from hypothesis import strategies as st

from riskguard.access import FilePolicy, MemoryPolicy, PolicyLine, parse_policy_text
from riskguard.access._lines import split_tokens


@given(st.text(alphabet="ab ,()[]#*\t.", max_size=30))
def test_tokens_split_as_casbin_splits_them(line: str) -> None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        assert parse_policy_text(line) == []
        return
    try:
        expected = _extract_tokens(stripped)
    except IndexError:  # Casbin crashes on a stray closing bracket; we name it
        try:
            split_tokens(stripped)
        except ValueError as exc:
            assert "unbalanced" in str(exc)
            return
        raise AssertionError("a stray bracket was accepted") from None
    assert split_tokens(stripped) == expected


def test_file_lines_keep_their_numbers_and_casbin_reads_the_same(tmp_path: Path) -> None:
    text = (
        "# header\r\n\r\n"
        "p, alice, d1, data(1, 2), read, allow\r\n"
        "   # indented comment\n"
        "  p,bob ,d1,  data2,write, deny  \n"
        "g, alice, admin, d1"  # no final newline
    )
    path = tmp_path / "policy.csv"
    path.write_bytes(text.encode("utf-8"))
    lines = FilePolicy(path).load()
    assert [(pl.ptype, pl.values, pl.line) for pl in lines] == [
        ("p", ("alice", "d1", "data(1, 2)", "read", "allow"), 3),
        ("p", ("bob", "d1", "data2", "write", "deny"), 5),
        ("g", ("alice", "admin", "d1"), 6),
    ]
    assert lines[1].location == "policy.csv:5"
    assert str(lines[1]) == "p, bob, d1, data2, write, deny"
    model = tmp_path / "model.conf"
    model.write_text(
        "[request_definition]\nr = sub, dom, obj, act\n[policy_definition]\n"
        "p = sub, dom, obj, act, eft\n[role_definition]\ng = _, _, _\n[policy_effect]\n"
        "e = some(where (p.eft == allow))\n[matchers]\nm = r.sub == p.sub\n"
    )
    e = casbin.Enforcer(str(model), str(path))
    assert e.get_policy() == [list(pl.values) for pl in lines if pl.ptype == "p"]
    assert e.get_grouping_policy() == [list(lines[2].values)]


def test_memory_policy_from_rows_and_text() -> None:
    rows = MemoryPolicy([("p", "a", "d", "o", "read", "allow"), ("g", "u", "a", "d")]).load()
    assert rows[1] == PolicyLine("g", ("u", "a", "d"), "<memory>", 2)
    assert rows[1].location == "<memory>:2"
    text = MemoryPolicy("\n# c\np, a, d, o, read, allow\n", name="db").load()
    assert text == [PolicyLine("p", ("a", "d", "o", "read", "allow"), "db", 3)]
    assert PolicyLine("p", ("a",)).location == "<memory>"
