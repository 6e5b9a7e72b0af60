"""A policy read as data, for the security-team tools (test, explain, lint, diff, usage).

:class:`PolicyView` knows, for a model in the compiled family (:mod:`._compile`), which
policy token is the subject, the fields and the condition, so that a rule can be compared
with a request field by field (which field fails) and with another rule (does one cover
every request of the other). It also walks the role graphs with the ``g`` lines that make
each link, so a role chain can name the grants it went through.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from riskguard.access._compile import CompiledModel, FieldClause, recognise
from riskguard.access._lines import PolicyLine
from riskguard.access._model import ModelDef
from riskguard.access._roles import MAX_HOPS, RoleGraphs
from riskguard.errors import PolicyError

__all__ = ["PolicyView", "key_match"]


def key_match(value: str, pattern: str) -> bool:
    """Casbin's ``keyMatch``: exact, or a prefix up to the pattern's first ``*``."""
    i = pattern.find("*")
    return value == pattern if i == -1 else value.startswith(pattern[:i])


def _key_covers(wide: str, narrow: str) -> bool:
    """Every value ``narrow`` matches, ``wide`` matches too."""
    if "*" not in wide:
        return wide == narrow
    prefix = wide[: wide.index("*")]
    inner = narrow[: narrow.index("*")] if "*" in narrow else narrow
    return inner.startswith(prefix)


@dataclass(frozen=True)
class PolicyView:
    """A model in the compiled family and its policy lines.

    :raises PolicyError: (from :meth:`of`) the model is outside the family.
    """

    model: ModelDef
    spec: CompiledModel
    lines: tuple[PolicyLine, ...]
    _chains: dict[tuple[str, str], dict[str, tuple[PolicyLine, ...]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def of(cls, model: ModelDef, lines: Iterable[PolicyLine]) -> PolicyView:
        """The view of ``lines`` under ``model``.

        :raises PolicyError: the model cannot be analysed (outside the compiled family).
        """
        spec = recognise(model)
        if isinstance(spec, str):
            raise PolicyError(
                f"the policy tools analyse RBAC-with-domains models only; this one has {spec}",
                path=model.path,
            )
        return cls(model, spec, tuple(lines))

    # -- tokens -----------------------------------------------------------------------

    @property
    def request_tokens(self) -> tuple[str, ...]:
        """The request tokens in order."""
        return self.spec.request

    def p_index(self, name: str) -> int | None:
        """The index of policy token ``name`` (``obj``, ``act``...), if the model has it."""
        return self.spec.policy.index(name) if name in self.spec.policy else None

    @cached_property
    def rules(self) -> tuple[PolicyLine, ...]:
        """The ``p`` lines, in file order."""
        return tuple(pl for pl in self.lines if pl.ptype == "p")

    @cached_property
    def grants(self) -> tuple[PolicyLine, ...]:
        """The lines of the role definition the matcher uses (``g``), in file order."""
        g = self.spec.subject.g
        return tuple(pl for pl in self.lines if pl.ptype == g)

    @property
    def arity(self) -> int:
        """Fields of a grant line (3 with domains)."""
        return self.model.roles[self.spec.subject.g].arity

    @cached_property
    def graphs(self) -> RoleGraphs:
        """The role graphs of :attr:`grants`."""
        return RoleGraphs.from_lines(self.grants, self.arity)

    def subject(self, pl: PolicyLine) -> str:
        """The rule's subject (a role, rarely a subject id)."""
        return pl.values[self.spec.subject.p_index]

    def is_deny(self, pl: PolicyLine) -> bool:
        """Whether the rule is a deny."""
        e = self.spec.eft_index
        return e is not None and pl.values[e] == "deny"

    def value(self, pl: PolicyLine, name: str) -> str | None:
        """The rule's value for policy token ``name``."""
        i = self.p_index(name)
        return pl.values[i] if i is not None and i < len(pl.values) else None

    # -- requests ---------------------------------------------------------------------

    def grant_domain(self, pl: PolicyLine) -> str:
        """The domain of a grant line (``""`` without domains)."""
        return pl.values[2] if self.arity > 2 else ""

    def role_domains(self, rvals: Sequence[str]) -> tuple[str, ...]:
        """The graphs the subject clause consults for a request."""
        return tuple(
            dict.fromkeys(
                rvals[int(v)] if is_r else str(v) for is_r, v in self.spec.subject.domains
            )
        )

    def roles_of(self, sub: str, rvals: Sequence[str]) -> frozenset[str]:
        """``sub`` and every role it holds for the request."""
        found: set[str] = set()
        for d in self.role_domains(rvals):
            found |= self.graphs.reach(sub, d)
        return frozenset(found)

    def field_ok(self, f: FieldClause, rule_value: str, request_value: str) -> bool:
        """Whether one field clause holds."""
        if f.kind == "key":
            return key_match(request_value, rule_value)
        if f.kind == "wild" and rule_value in f.literals:
            return True
        return request_value == rule_value

    def cond_ok(self, pl: PolicyLine, rvals: Sequence[str]) -> bool:
        """Whether the rule's condition holds for the request (``True`` without one)."""
        cond = self.spec.cond
        if cond is None:
            return True
        alts = cond.cases.get(pl.values[cond.p_index], ())
        return any(all(rvals[a] == rvals[b] for a, b in alt) for alt in alts)

    def failures(
        self, pl: PolicyLine, rvals: Sequence[str], roles: frozenset[str]
    ) -> list[tuple[str, str, str]]:
        """The fields on which ``pl`` fails the request: ``(token, rule value, request
        value)`` each; empty when the rule matches."""
        out: list[tuple[str, str, str]] = []
        s = self.spec
        sub = self.subject(pl)
        if sub not in roles:
            out.append((s.policy[s.subject.p_index], sub, rvals[s.subject.r_index]))
        for f in s.fields:
            rv, qv = pl.values[f.p_index], rvals[f.r_index]
            if not self.field_ok(f, rv, qv):
                out.append((s.policy[f.p_index], rv, qv))
        if s.cond is not None and not self.cond_ok(pl, rvals):
            c = s.cond.p_index
            pairs = {p for alt in s.cond.cases.get(pl.values[c], ()) for p in alt}
            shown = ", ".join(f"{s.request[a]}={rvals[a]!r}" for pair in pairs for a in pair)
            out.append((s.policy[c], pl.values[c], shown))
        return out

    def covers(self, wide: PolicyLine, narrow: PolicyLine) -> bool:
        """Every request ``narrow`` matches (for the same subject), ``wide`` matches too."""
        s = self.spec
        for f in s.fields:
            w, n = wide.values[f.p_index], narrow.values[f.p_index]
            if f.kind == "key":
                if not _key_covers(w, n):
                    return False
            elif f.kind == "wild" and w in f.literals:
                continue
            elif w != n:
                return False
        if s.cond is not None:
            c = s.cond.p_index
            w, n = wide.values[c], narrow.values[c]
            if w != n and not any(not alt for alt in s.cond.cases.get(w, ())):
                return False
        return True

    # -- role chains ------------------------------------------------------------------

    @cached_property
    def _edges(self) -> dict[str, dict[str, list[PolicyLine]]]:
        out: dict[str, dict[str, list[PolicyLine]]] = {}
        for pl in self.grants:
            out.setdefault(self.grant_domain(pl), {}).setdefault(pl.values[0], []).append(pl)
        return out

    def chain(self, sub: str, role: str, domains: Sequence[str]) -> tuple[PolicyLine, ...] | None:
        """The shortest chain of grants from ``sub`` to ``role`` in one of ``domains``
        (within Casbin's hop limit); ``()`` when ``sub`` is ``role``; ``None`` if none."""
        if sub == role:
            return ()
        best: tuple[PolicyLine, ...] | None = None
        for d in domains:
            found = self._chains_from(sub, d).get(role)
            if found is not None and (best is None or len(found) < len(best)):
                best = found
        return best

    def _chains_from(self, sub: str, domain: str) -> dict[str, tuple[PolicyLine, ...]]:
        key = (sub, domain)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        graph = self._edges.get(domain, {})
        paths: dict[str, tuple[PolicyLine, ...]] = {sub: ()}
        queue = deque([sub])
        while queue:
            node = queue.popleft()
            if len(paths[node]) >= MAX_HOPS:
                continue
            for pl in graph.get(node, ()):
                target = pl.values[1]
                if target not in paths:
                    paths[target] = (*paths[node], pl)
                    queue.append(target)
        self._chains[key] = paths
        return paths

    # -- names ------------------------------------------------------------------------

    @cached_property
    def role_names(self) -> frozenset[str]:
        """Names granted as roles (second field of a grant) or used as rule subjects."""
        return frozenset(pl.values[1] for pl in self.grants) | {self.subject(p) for p in self.rules}

    @cached_property
    def subjects(self) -> frozenset[str]:
        """Names holding a grant that are never granted themselves: the subject ids."""
        granted = {pl.values[1] for pl in self.grants}
        return frozenset(pl.values[0] for pl in self.grants if pl.values[0] not in granted)

    @cached_property
    def domains(self) -> tuple[str, ...]:
        """Concrete domains named by grants and rules (not ``*``), in first-seen order."""
        seen: dict[str, None] = {}
        for pl in self.grants:
            d = self.grant_domain(pl)
            if d and "*" not in d:
                seen[d] = None
        for pl in self.rules:
            rd = self.value(pl, "dom")
            if rd and "*" not in rd:
                seen[rd] = None
        return tuple(seen)
