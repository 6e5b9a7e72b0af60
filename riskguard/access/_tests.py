"""Policy tests: TOML files of expected decisions, run through :class:`AccessControl`, with
per-rule coverage.

::

    [[case]]
    name = "a customer reads their own order"
    sub = "alice"
    dom = "m:1001"
    obj = "order"
    act = "read"
    owner = "alice"          # any request attribute of the model (owner, assignee)
    expect = "allow"         # or "deny"

A rule is *exercised* when it is among the matching allows or denies of some case's
decision; coverage is the share of ``p`` rules exercised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskguard.access._analysis import PolicyView, key_match
from riskguard.access._control import AccessControl
from riskguard.access._decision import Decision
from riskguard.access._lines import PolicyLine
from riskguard.access._toml import read_toml
from riskguard.errors import PolicyError

__all__ = ["CaseResult", "PolicyCase", "TestReport", "load_cases", "run_cases"]

_REQUIRED = ("sub", "dom", "obj", "act", "expect")
_EXPECT = ("allow", "deny")
_CASE_HEADER = re.compile(r"^\s*\[\[\s*case\s*\]\]\s*(#.*)?$")


@dataclass(frozen=True)
class PolicyCase:
    """One expected decision and where it is written."""

    name: str
    request: dict[str, str]
    expect: str
    path: str
    line: int

    @property
    def location(self) -> str:
        """``orders.toml:12``."""
        return f"{Path(self.path).name}:{self.line}"


@dataclass(frozen=True)
class CaseResult:
    """A case and the decision the policy made."""

    case: PolicyCase
    decision: Decision

    @property
    def passed(self) -> bool:
        """Whether the decision is the expected one."""
        return self.decision.allowed == (self.case.expect == "allow")

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "name": self.case.name,
            "location": self.case.location,
            "request": self.case.request,
            "expect": self.case.expect,
            "actual": "allow" if self.decision.allowed else "deny",
            "passed": self.passed,
            "reason": self.decision.reason,
        }


@dataclass(frozen=True)
class TestReport:
    """All results, and which rules no case exercised."""

    __test__ = False  # not a pytest class

    results: tuple[CaseResult, ...]
    rules: tuple[PolicyLine, ...]
    uncovered: tuple[PolicyLine, ...] = field(default=())

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        """The results that did not pass."""
        return tuple(r for r in self.results if not r.passed)

    @property
    def coverage(self) -> float:
        """Percentage of ``p`` rules exercised (100 for a policy without rules)."""
        if not self.rules:
            return 100.0
        return 100.0 * (len(self.rules) - len(self.uncovered)) / len(self.rules)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "cases": len(self.results),
            "passed": len(self.results) - len(self.failures),
            "failed": len(self.failures),
            "coverage": round(self.coverage, 2),
            "rules": len(self.rules),
            "uncovered": [{"location": r.location, "rule": str(r)} for r in self.uncovered],
            "results": [r.to_json() for r in self.results],
        }


def _case_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.split("\n"), 1) if _CASE_HEADER.match(line)]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise PolicyError("no *.toml policy test files in the folder", path=path)
        return files
    if not path.is_file():
        raise PolicyError("the policy test file or folder does not exist", path=path)
    return [path]


def load_cases(path: str | Path, view: PolicyView) -> list[PolicyCase]:
    """Every case of a test file, or of every ``*.toml`` in a folder (sorted by name).

    Cases are checked against the policy: the subject must hold a grant or be a rule's
    subject, the object must be one some rule names, attributes must be the model's.

    :raises PolicyError: a file is missing, not TOML, or a case is invalid (file and line).
    """
    attributes = set(view.request_tokens) - {"sub", "dom", "obj", "act"}
    known_subjects = view.subjects | view.role_names
    # a bare "*" (a deny on everything) would make every object known: it names none
    objects = {v for pl in view.rules if (v := view.value(pl, "obj")) and not v.startswith("*")}
    out: list[PolicyCase] = []
    for file in _files(Path(path)):
        src = str(file)
        text, doc = read_toml(file, "policy test file")
        extra = sorted(set(doc) - {"case"})
        if extra:
            raise PolicyError(
                f"unknown top-level key {extra[0]!r}", path=src, hint="write cases as [[case]]"
            )
        cases = doc.get("case", [])
        if not isinstance(cases, list) or not cases:
            raise PolicyError("the file has no [[case]]", path=src)
        lines = _case_lines(text)
        for i, raw in enumerate(cases):
            line = lines[i] if i < len(lines) else 0
            out.append(_case(raw, src, line, i, attributes, known_subjects, objects))
    return out


def _case(
    raw: Any,
    src: str,
    line: int,
    i: int,
    attributes: set[str],
    subjects: frozenset[str],
    objects: set[str],
) -> PolicyCase:
    def err(message: str, hint: str | None = None) -> PolicyError:
        return PolicyError(message, path=src, line=line or None, hint=hint)

    if not isinstance(raw, dict):
        raise err("a case is a table")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise err("the case has no " + ", ".join(missing))
    unknown = sorted(set(raw) - {*_REQUIRED, "name", *attributes})
    if unknown:
        known = ", ".join(sorted(attributes)) or "none"
        raise err(f"unknown key {unknown[0]!r}", hint=f"the model's attributes: {known}")
    for k, v in raw.items():
        if not isinstance(v, str):
            raise err(f"{k!r} must be a string")
    if raw["expect"] not in _EXPECT:
        raise err(f'expect is {raw["expect"]!r}; write "allow" or "deny"')
    if raw["sub"] not in subjects:
        raise err(
            f"unknown subject or role {raw['sub']!r}: no grant or rule names it",
            hint="test subjects must hold a grant in the policy (g, SUBJECT, ROLE, DOMAIN)",
        )
    if not any(key_match(raw["obj"], o) for o in objects):
        raise err(f"unknown object {raw['obj']!r}: no rule names it")
    request = {k: raw[k] for k in ("sub", "dom", "obj", "act")}
    request |= {k: raw[k] for k in sorted(attributes) if k in raw}
    name = raw.get("name") or f"case {i + 1}"
    return PolicyCase(name, request, raw["expect"], src, line)


def run_cases(ac: AccessControl, cases: Sequence[PolicyCase]) -> TestReport:
    """Decide every case (not audited) and compute coverage over the ``p`` rules."""
    results: list[CaseResult] = []
    exercised: set[tuple[str, int]] = set()
    snap = ac.snapshot  # one policy version for every case and the coverage
    for case in cases:
        r = case.request
        attrs = {k: v for k, v in r.items() if k not in ("sub", "dom", "obj", "act")}
        d = ac._decide(snap, r["sub"], r["dom"], r["obj"], r["act"], attrs)[0]
        exercised.update((pl.source, pl.line) for pl in (*d.allows, *d.denies))
        results.append(CaseResult(case, d))
    rules = tuple(pl for pl in snap.lines if pl.ptype == "p")
    uncovered = tuple(pl for pl in rules if (pl.source, pl.line) not in exercised)
    return TestReport(tuple(results), rules, uncovered)
