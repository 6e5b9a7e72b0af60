"""``policy lint``: defects Casbin accepts silently.

Kinds (``Finding.kind``):

* ``parse`` — a model or policy line that does not parse or check (file and line);
* ``cycle`` — a cycle in a role graph;
* ``duplicate`` — the same rule or grant twice;
* ``shadowed`` — a rule whose every request another rule of the same subject and effect
  also matches (it can be deleted without changing a decision);
* ``overridden`` — an allow that a deny always overrides (for every holder of its role);
* ``undefined_role`` — a role granted that has no rule and inherits no role with one;
* ``ungranted_role`` — a rule's subject that no grant gives to anyone;
* ``pii_wildcard`` — an allow whose object pattern (``customer.*``, ``*``) reaches a PII
  object;
* ``unknown_object`` / ``unknown_action`` — against the resource schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskguard.access._analysis import PolicyView, key_match
from riskguard.access._lines import FilePolicy, PolicyLine
from riskguard.access._model import ModelDef, read_model
from riskguard.access._roles import find_cycle
from riskguard.access._schema import DEFAULT_PII, ResourceSchema
from riskguard.access._snapshot import check_lines
from riskguard.errors import PolicyError

__all__ = ["KINDS", "Finding", "lint_files", "lint_lines"]

KINDS = (
    "parse",
    "cycle",
    "duplicate",
    "shadowed",
    "overridden",
    "undefined_role",
    "ungranted_role",
    "pii_wildcard",
    "unknown_object",
    "unknown_action",
)


@dataclass(frozen=True)
class Finding:
    """One defect: its kind, a sentence, where, and the other lines involved."""

    kind: str
    message: str
    path: str | None = None
    line: int | None = None
    related: tuple[str, ...] = field(default=())

    @property
    def location(self) -> str:
        """``policy.csv:42`` (or the file name alone)."""
        if self.path is None:
            return "-"
        name = Path(self.path).name
        return f"{name}:{self.line}" if self.line else name

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "kind": self.kind,
            "message": self.message,
            "location": self.location,
            "path": self.path,
            "line": self.line,
            "related": list(self.related),
        }


def _at(pl: PolicyLine, kind: str, message: str, *related: PolicyLine) -> Finding:
    return Finding(kind, message, pl.source, pl.line or None, tuple(r.location for r in related))


def _from_error(exc: PolicyError) -> Finding:
    return Finding("parse", exc.message, str(exc.path) if exc.path else None, exc.line)


def lint_files(
    model_path: str | Path, policy_path: str | Path, schema: ResourceSchema | None = None
) -> list[Finding]:
    """Lint a model and policy file (parse errors are findings, not exceptions).

    :raises PolicyError: the model is outside the family the tools analyse.
    """
    try:
        model = read_model(model_path)
        lines = FilePolicy(policy_path).load()
    except PolicyError as exc:
        return [_from_error(exc)]
    return lint_lines(model, lines, schema)


def lint_lines(
    model: ModelDef, lines: Sequence[PolicyLine], schema: ResourceSchema | None = None
) -> list[Finding]:
    """Lint parsed policy lines under ``model``.

    :raises PolicyError: the model is outside the family the tools analyse.
    """
    out: list[Finding] = []
    for g, role in model.roles.items():
        cycle = find_cycle([pl for pl in lines if pl.ptype == g], role.arity)
        if cycle:
            chain = " → ".join([c.values[0] for c in cycle] + [cycle[-1].values[1]])
            last = max(cycle, key=lambda c: c.line)
            out.append(_at(last, "cycle", f"role cycle: {chain}", *cycle))
    try:
        check_lines(model, lines)
    except PolicyError as exc:
        if not exc.message.startswith("role cycle"):
            return [*out, _from_error(exc)]
    view = PolicyView.of(model, lines)
    out += _duplicates(lines)
    out += _shadowed(view)
    out += _overridden(view)
    out += _roles(view)
    out += _pii(view, schema.pii if schema is not None else DEFAULT_PII)
    if schema is not None:
        out += _schema(view, schema)
    order = {k: i for i, k in enumerate(KINDS)}
    out.sort(key=lambda f: (f.path or "", f.line or 0, order[f.kind]))
    return out


def _duplicates(lines: Sequence[PolicyLine]) -> list[Finding]:
    seen: dict[tuple[str, ...], PolicyLine] = {}
    out: list[Finding] = []
    for pl in lines:
        key = (pl.ptype, *pl.values)
        first = seen.setdefault(key, pl)
        if first is not pl:
            out.append(_at(pl, "duplicate", f"duplicate of {first.location}: {pl}", first))
    return out


def _by_subject(view: PolicyView) -> dict[str, list[PolicyLine]]:
    groups: dict[str, list[PolicyLine]] = {}
    for pl in dict.fromkeys(view.rules):  # duplicates are reported once, as duplicates
        groups.setdefault(view.subject(pl), []).append(pl)
    return groups


def _shadowed(view: PolicyView) -> list[Finding]:
    out: list[Finding] = []
    for rules in _by_subject(view).values():
        distinct = list({pl.values: pl for pl in reversed(rules)}.values())[::-1]
        for a in distinct:
            for b in distinct:
                if a is b or view.is_deny(a) != view.is_deny(b) or not view.covers(b, a):
                    continue
                if view.covers(a, b) and b.line > a.line:
                    continue  # equivalent rules: report the later one only
                what = "deny" if view.is_deny(a) else "allow"
                out.append(_at(a, "shadowed", f"{what} {a} is shadowed by {b.location}: {b}", b))
                break
    return out


def _holders_domains(view: PolicyView, role: str) -> set[str]:
    return {view.grant_domain(pl) for pl in view.grants if pl.values[1] == role}


def _overridden(view: PolicyView) -> list[Finding]:
    denies = [pl for pl in view.rules if view.is_deny(pl)]
    out: list[Finding] = []
    for a in dict.fromkeys(view.rules):
        if view.is_deny(a):
            continue
        sub = view.subject(a)
        domains = _holders_domains(view, sub)
        for d in denies:
            dsub = view.subject(d)
            binds = dsub == sub or (
                bool(domains) and all(dsub in view.graphs.reach(sub, dom) for dom in domains)
            )
            if binds and view.covers(d, a):
                out.append(
                    _at(a, "overridden", f"allow {a} is always overridden by {d.location}", d)
                )
                break
    return out


def _roles(view: PolicyView) -> list[Finding]:
    out: list[Finding] = []
    with_rules = {view.subject(pl) for pl in view.rules}
    domains = {view.grant_domain(pl) for pl in view.grants}
    reported: set[str] = set()
    for pl in view.grants:
        role = pl.values[1]
        if role in reported or role in with_rules:
            continue
        if any(view.graphs.reach(role, d) & with_rules for d in domains):
            continue
        reported.add(role)
        out.append(_at(pl, "undefined_role", f"role {role!r} is granted but has no rule (typo?)"))
    granted = {pl.values[1] for pl in view.grants} | {pl.values[0] for pl in view.grants}
    for pl in view.rules:
        sub = view.subject(pl)
        if sub in granted or sub in reported:
            continue
        reported.add(sub)
        out.append(_at(pl, "ungranted_role", f"role {sub!r} has rules but nobody is granted it"))
    return out


def _pii(view: PolicyView, pii: frozenset[str]) -> list[Finding]:
    out: list[Finding] = []
    for pl in view.rules:
        obj = view.value(pl, "obj")
        if view.is_deny(pl) or obj is None or "*" not in obj:
            continue
        reached = sorted(o for o in pii if key_match(o, obj))
        if reached:
            out.append(
                _at(pl, "pii_wildcard", f"allow on {obj!r} reaches PII: {', '.join(reached)}")
            )
    return out


def _schema(view: PolicyView, schema: ResourceSchema) -> list[Finding]:
    out: list[Finding] = []
    for pl in view.rules:
        obj, act = view.value(pl, "obj"), view.value(pl, "act")
        if obj is None:
            continue
        matching = [o for o in schema.actions if key_match(o, obj)]
        if not matching:
            out.append(
                _at(pl, "unknown_object", f"object {obj!r} is not in {Path(schema.path).name}")
            )
            continue
        if act is None or act == "*":
            continue
        allowed = set().union(*(schema.actions[o] for o in matching))
        if act not in allowed:
            out.append(
                _at(
                    pl,
                    "unknown_action",
                    f"action {act!r} is not declared for {obj!r} "
                    f"(declared: {', '.join(sorted(allowed))})",
                )
            )
    return out
