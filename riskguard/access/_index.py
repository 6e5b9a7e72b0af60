"""The compiled decision index: Casbin's decisions without scanning every rule.

Rules are filed in a tree: first by subject (``p.sub``), then one level per field clause,
each level a dict of exact values, a bucket for wildcard literals and buckets for
``keyMatch`` prefixes. A request walks only the branches it can match: the subject's
effective roles (memoised per subject and domain), then the request's value at each level.
Condition clauses become a few equality bits of the request, checked per candidate rule.
Decisions are cached in an LRU keyed by the request tuple reduced to what the model reads
(the subject, domains, field values and condition bits); a new policy is a new index, so
the cache never outlives the policy it was filled from.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from riskguard.access._compile import CompiledModel
from riskguard.access._decision import Decision, EngineKind
from riskguard.access._lines import PolicyLine
from riskguard.access._roles import RoleGraphs
from riskguard.errors import PolicyError

__all__ = ["CompiledEngine"]


class _Node:
    __slots__ = ("exact", "plens", "prefixes", "wild")

    def __init__(self) -> None:
        self.exact: dict[str, Any] = {}
        self.wild: Any = None
        self.prefixes: dict[str, Any] = {}
        self.plens: tuple[int, ...] = ()


class _Rule:
    __slots__ = ("alts", "deny", "line", "pos")

    def __init__(
        self, pos: int, line: PolicyLine, deny: bool, alts: tuple[tuple[int, ...], ...] | None
    ) -> None:
        self.pos = pos
        self.line = line
        self.deny = deny
        self.alts = alts  # None: no condition; else any alternative whose bits are all set


class CompiledEngine:
    """Decides like ``casbin.Enforcer`` for a :class:`CompiledModel` and its policy lines.

    :raises PolicyError: a rule names a condition the model does not define.
    """

    kind: EngineKind = "compiled"

    def __init__(
        self,
        spec: CompiledModel,
        lines: Sequence[PolicyLine],
        graphs: RoleGraphs,
        *,
        cache_size: int = 65_536,
    ) -> None:
        self.spec = spec
        self.graphs = graphs
        s = spec.subject
        self._r_doms = tuple(int(v) for is_r, v in s.domains if is_r)
        self._lit_doms = tuple(str(v) for is_r, v in s.domains if not is_r)
        pairs: list[tuple[int, int]] = []
        if spec.cond is not None:
            for alts in spec.cond.cases.values():
                for alt in alts:
                    for pair in alt:
                        if pair not in pairs:
                            pairs.append(pair)
        self._pairs = tuple(pairs)
        picks = (s.r_index, *self._r_doms, *(f.r_index for f in spec.fields))
        getter = operator.itemgetter(*picks)
        self._pick: Callable[[tuple[str, ...]], tuple[str, ...]] = (
            (lambda rv: (getter(rv),)) if len(picks) == 1 else getter
        )
        self._nd = len(self._r_doms)
        self._nf = len(spec.fields)
        self._roots: dict[str, Any] = {}
        self._build([pl for pl in lines if pl.ptype == "p"])
        self._roles_of = functools.lru_cache(maxsize=max(cache_size, 1024))(self._roles_uncached)
        self._lru = (
            functools.lru_cache(maxsize=cache_size)(self._decide_key) if cache_size > 0 else None
        )
        self._cached: Callable[[tuple[Any, ...]], Decision] = self._lru or self._decide_key

    # -- building ---------------------------------------------------------------------

    def _alts(self, pl: PolicyLine) -> tuple[tuple[int, ...], ...] | None:
        cond = self.spec.cond
        if cond is None:
            return None
        value = pl.values[cond.p_index]
        cases = cond.cases.get(value)
        if cases is None:
            known = ", ".join(repr(k) for k in cond.cases)
            raise PolicyError(
                f"unknown condition {value!r} (the model knows {known})",
                path=pl.source,
                line=pl.line or None,
            )
        if any(not alt for alt in cases):
            return None
        return tuple(tuple(self._pairs.index(pair) for pair in alt) for alt in cases)

    def _build(self, rules: list[PolicyLine]) -> None:
        spec = self.spec
        last = self._nf - 1
        for pos, pl in enumerate(rules):
            deny = spec.eft_index is not None and pl.values[spec.eft_index] == "deny"
            rule = _Rule(pos, pl, deny, self._alts(pl))
            sub = pl.values[spec.subject.p_index]
            if last < 0:
                self._roots.setdefault(sub, []).append(rule)
                continue
            node = self._roots.get(sub)
            if node is None:
                node = self._roots[sub] = _Node()
            for level, f in enumerate(spec.fields):
                value = pl.values[f.p_index]
                make: Callable[[], Any] = list if level == last else _Node
                if f.kind == "wild" and value in f.literals:
                    if node.wild is None:
                        node.wild = make()
                    child = node.wild
                elif f.kind == "key" and "*" in value:
                    prefix = value[: value.index("*")]
                    child = node.prefixes.get(prefix)
                    if child is None:
                        child = node.prefixes[prefix] = make()
                        node.plens = tuple(sorted({*node.plens, len(prefix)}))
                else:
                    child = node.exact.get(value)
                    if child is None:
                        child = node.exact[value] = make()
                if level == last:
                    child.append(rule)
                else:
                    node = child

    # -- deciding ---------------------------------------------------------------------

    def decide(self, rvals: tuple[str, ...]) -> Decision:
        """Decide a request given in the model's request-token order."""
        pairs = self._pairs
        if pairs:
            key = self._pick(rvals) + tuple([rvals[a] == rvals[b] for a, b in pairs])
        else:
            key = self._pick(rvals)
        return self._cached(key)

    def cache_clear(self) -> None:
        """Forget cached decisions and role sets (the policy has not changed; for tests and
        benchmarks)."""
        if self._lru is not None:
            self._lru.cache_clear()
        self._roles_of.cache_clear()

    def cache_info(self) -> Any:
        """Hits and misses of the decision cache (``None`` when caching is off)."""
        return self._lru.cache_info() if self._lru is not None else None

    def _roles_uncached(self, sub: str, doms: tuple[str, ...]) -> tuple[tuple[str, ...], list[Any]]:
        graphs = self.graphs
        found: set[str] = set()
        for d in doms:
            found |= graphs.reach(sub, d)
        for d in self._lit_doms:
            found |= graphs.reach(sub, d)
        roles = tuple(sorted(found))
        roots = self._roots
        return roles, [roots[r] for r in roles if r in roots]

    def _decide_key(self, key: tuple[Any, ...]) -> Decision:
        nd, nf = self._nd, self._nf
        roles, frontier = self._roles_of(key[0], key[1 : 1 + nd])
        for x in key[1 + nd : 1 + nd + nf]:
            if not frontier:
                break
            nxt: list[Any] = []
            for node in frontier:
                child = node.exact.get(x)
                if child is not None:
                    nxt.append(child)
                if node.wild is not None:
                    nxt.append(node.wild)
                if node.plens:
                    n = len(x)
                    for length in node.plens:
                        if length > n:
                            break
                        child = node.prefixes.get(x[:length])
                        if child is not None:
                            nxt.append(child)
            frontier = nxt
        bits = key[1 + nd + nf :]
        allows: list[_Rule] = []
        denies: list[_Rule] = []
        for leaf in frontier:
            for rule in leaf:
                alts = rule.alts
                if alts is not None and not any(all(bits[i] for i in alt) for alt in alts):
                    continue
                (denies if rule.deny else allows).append(rule)
        effect = self.spec.effect
        if effect == "allow_and_deny":
            allowed = bool(allows) and not denies
        elif effect == "allow_override":
            allowed = bool(allows)
        else:
            allowed = not denies
        if len(allows) > 1:
            allows.sort(key=_pos)
        if len(denies) > 1:
            denies.sort(key=_pos)
        return Decision(
            allowed, tuple([r.line for r in allows]), tuple([r.line for r in denies]), roles
        )


def _pos(rule: _Rule) -> int:
    return rule.pos
