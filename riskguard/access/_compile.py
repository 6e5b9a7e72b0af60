"""Recognise the model family the decision index can compile.

The family: the matcher is a conjunction (``&&``, in any order) of

* one **subject** clause: ``g(r.sub, p.sub, D1) || g(r.sub, p.sub, D2) ...`` where each
  ``D`` is a request token (``r.dom``) or a string literal (``"*"``); or ``g(r.sub, p.sub)``
  for a role definition without domains;
* **field** clauses, one per policy token at most:

  - ``r.x == p.y`` (exact),
  - ``p.y == "L" || r.x == p.y`` (exact, or the rule's value is one of the literals),
  - ``keyMatch(r.x, p.y)`` (exact, or a prefix up to the rule's first ``*``);
* at most one **condition** clause: ``p.c == "L0" || (p.c == "L1" && r.a == r.b) || ...``,
  each disjunct one literal of ``p.c`` and zero or more equalities between request tokens;

with the effect allow-and-deny, allow-override or deny-override, no ``eval()`` and no
priority token. Anything else is described by :func:`recognise`'s reason and runs on
``casbin.Enforcer``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal, cast

from riskguard.access._model import EFFECTS, ModelDef, matcher_expression

__all__ = ["CompiledModel", "CondClause", "FieldClause", "SubjectClause", "recognise"]

FieldKind = Literal["eq", "wild", "key"]
Effect = Literal["allow_and_deny", "allow_override", "deny_override"]


@dataclass(frozen=True, slots=True)
class SubjectClause:
    """``g(r.sub, p.sub, d)`` for each ``d`` in ``domains``: ``(True, i)`` is request token
    ``i``, ``(False, "lit")`` a literal domain (``""`` for a role definition without
    domains)."""

    g: str
    r_index: int
    p_index: int
    domains: tuple[tuple[bool, int | str], ...]


@dataclass(frozen=True, slots=True)
class FieldClause:
    """Policy token ``p_index`` against request token ``r_index``."""

    kind: FieldKind
    p_index: int
    r_index: int
    literals: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CondClause:
    """Policy token ``p_index`` names a condition: for each literal, the alternatives
    (any of them), each a tuple of request-token pairs that must all be equal."""

    p_index: int
    cases: dict[str, tuple[tuple[tuple[int, int], ...], ...]]


@dataclass(frozen=True, slots=True)
class CompiledModel:
    """What the index needs to know about a recognised model."""

    request: tuple[str, ...]
    policy: tuple[str, ...]
    subject: SubjectClause
    fields: tuple[FieldClause, ...]
    cond: CondClause | None
    eft_index: int | None
    effect: Effect


class _NotInFamily(Exception):
    pass


def recognise(model: ModelDef) -> CompiledModel | str:
    """The compiled form of ``model``, or why it is outside the family (a sentence)."""
    try:
        return _Recogniser(model).run()
    except _NotInFamily as exc:
        return str(exc)


def _flatten(node: ast.expr, op: type[ast.boolop]) -> list[ast.expr]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, op):
        out: list[ast.expr] = []
        for v in node.values:
            out.extend(_flatten(v, op))
        return out
    return [node]


def _equality(node: ast.expr) -> tuple[ast.expr, ast.expr] | None:
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.Eq)
        and len(node.comparators) == 1
    ):
        return node.left, node.comparators[0]
    return None


class _Recogniser:
    def __init__(self, model: ModelDef) -> None:
        self.model = model  # parse_model guarantees r, p, e and m
        self.request = model.request["r"]
        self.policy = model.policy["p"]
        self.r_names = {f"r_{t}": i for i, t in enumerate(self.request)}
        self.p_names = {f"p_{t}": i for i, t in enumerate(self.policy)}

    def run(self) -> CompiledModel:
        effect = EFFECTS[self.model.effect["e"]]
        if effect not in ("allow_and_deny", "allow_override", "deny_override"):
            raise _NotInFamily(f"the {effect} effect")
        if "priority" in self.policy:
            raise _NotInFamily("a priority token")
        matcher = self.model.matcher["m"]
        if "eval(" in matcher:
            raise _NotInFamily("eval() in the matcher")
        tree = ast.parse(matcher_expression(matcher).strip(), mode="eval").body
        subject: SubjectClause | None = None
        fields: list[FieldClause] = []
        cond: CondClause | None = None
        used: set[int] = set()
        for clause in _flatten(tree, ast.And):
            s = self._subject(clause)
            if s is not None:
                if subject is not None:
                    raise _NotInFamily("two subject clauses")
                subject, p_index = s, s.p_index
            else:
                f = self._field(clause)
                if f is not None:
                    fields.append(f)
                    p_index = f.p_index
                else:
                    c = self._cond(clause)
                    if c is None:
                        raise _NotInFamily(f"the clause {ast.unparse(clause)!r}")
                    if cond is not None:
                        raise _NotInFamily("two condition clauses")
                    cond, p_index = c, c.p_index
            if p_index in used:
                raise _NotInFamily(f"p.{self.policy[p_index]} in two clauses")
            used.add(p_index)
        if subject is None:
            raise _NotInFamily("no g(r.sub, p.sub, ...) subject clause")
        eft = self.policy.index("eft") if "eft" in self.policy else None
        if eft is not None and eft in used:
            raise _NotInFamily("p.eft in the matcher")
        return CompiledModel(
            self.request, self.policy, subject, tuple(fields), cond, eft, cast(Effect, effect)
        )

    def _r(self, node: ast.expr) -> int | None:
        return self.r_names.get(node.id) if isinstance(node, ast.Name) else None

    def _p(self, node: ast.expr) -> int | None:
        return self.p_names.get(node.id) if isinstance(node, ast.Name) else None

    @staticmethod
    def _str(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return None

    def _subject(self, node: ast.expr) -> SubjectClause | None:
        calls = _flatten(node, ast.Or)
        found: list[tuple[str, int, int, tuple[bool, int | str]]] = []
        for call in calls:
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in self.model.roles
                and not call.keywords
            ):
                return None
            role = self.model.roles[call.func.id]
            if role.conditional or role.arity not in (2, 3) or len(call.args) != role.arity:
                return None
            r, p = self._r(call.args[0]), self._p(call.args[1])
            if r is None or p is None:
                return None
            dom: tuple[bool, int | str] = (False, "")
            if role.arity == 3:
                d_r, d_lit = self._r(call.args[2]), self._str(call.args[2])
                if d_r is not None:
                    dom = (True, d_r)
                elif d_lit is not None:
                    dom = (False, d_lit)
                else:
                    return None
            found.append((call.func.id, r, p, dom))
        if len({(g, r, p) for g, r, p, _ in found}) != 1:
            return None
        g, r, p, _ = found[0]
        domains = tuple(dict.fromkeys(d for *_, d in found))
        return SubjectClause(g, r, p, domains)

    def _rp(self, node: ast.expr) -> tuple[int, int] | None:
        eq = _equality(node)
        if eq is None:
            return None
        a, b = eq
        r, p = self._r(a), self._p(b)
        if r is None or p is None:
            r, p = self._r(b), self._p(a)
        return None if r is None or p is None else (r, p)

    def _p_literal(self, node: ast.expr) -> tuple[int, str] | None:
        eq = _equality(node)
        if eq is None:
            return None
        for a, b in (eq, eq[::-1]):
            p, lit = self._p(a), self._str(b)
            if p is not None and lit is not None:
                return p, lit
        return None

    def _field(self, node: ast.expr) -> FieldClause | None:
        rp = self._rp(node)
        if rp is not None:
            return FieldClause("eq", rp[1], rp[0])
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "keyMatch"
            and len(node.args) == 2
            and not node.keywords
        ):
            r, p = self._r(node.args[0]), self._p(node.args[1])
            return None if r is None or p is None else FieldClause("key", p, r)
        parts = _flatten(node, ast.Or)
        if len(parts) < 2:
            return None
        eqs = [x for x in map(self._rp, parts) if x is not None]
        lits = [x for x in map(self._p_literal, parts) if x is not None]
        if len(eqs) != 1 or len(eqs) + len(lits) != len(parts):
            return None
        r, p = eqs[0]
        if any(lp != p for lp, _ in lits):
            return None
        return FieldClause("wild", p, r, frozenset(lit for _, lit in lits))

    def _cond(self, node: ast.expr) -> CondClause | None:
        cases: dict[str, list[tuple[tuple[int, int], ...]]] = {}
        p_index: int | None = None
        for alt in _flatten(node, ast.Or):
            lit: tuple[int, str] | None = None
            pairs: list[tuple[int, int]] = []
            for part in _flatten(alt, ast.And):
                pl = self._p_literal(part)
                if pl is not None:
                    if lit is not None:
                        return None
                    lit = pl
                    continue
                eq = _equality(part)
                a = self._r(eq[0]) if eq else None
                b = self._r(eq[1]) if eq else None
                if a is None or b is None:
                    return None
                pairs.append((a, b))
            if lit is None or (p_index is not None and lit[0] != p_index):
                return None
            p_index = lit[0]
            cases.setdefault(lit[1], []).append(tuple(pairs))
        if p_index is None:
            return None
        return CondClause(p_index, {k: tuple(v) for k, v in cases.items()})
