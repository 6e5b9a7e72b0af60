"""Role graphs as Casbin's domain role manager builds them, and their cycles.

Casbin keeps one graph per domain (the third field of a ``g`` line; ``""`` for a role
definition without domains). ``g(a, b, d)`` holds when ``b`` is ``a`` itself or reachable
from ``a`` in graph ``d`` in at most :data:`MAX_HOPS` links (its role manager walks ten
levels, the first being ``a`` itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from riskguard.access._lines import PolicyLine

__all__ = ["MAX_HOPS", "RoleGraphs", "find_cycle"]

#: Casbin's default ``max_hierarchy_level`` is 10 levels, i.e. at most 9 links.
MAX_HOPS = 9


class RoleGraphs:
    """The graphs of one role definition. :meth:`reach` is memoised per node that has
    edges (a bounded set); other names reach only themselves."""

    def __init__(self, edges: Iterable[tuple[str, str, str]], max_hops: int = MAX_HOPS) -> None:
        self._out: dict[str, dict[str, list[str]]] = {}
        for user, role, domain in edges:
            targets = self._out.setdefault(domain, {}).setdefault(user, [])
            if role not in targets:
                targets.append(role)
        self._max_hops = max_hops
        self._memo: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    def from_lines(cls, lines: Iterable[PolicyLine], arity: int) -> RoleGraphs:
        """The graphs of ``g`` lines with ``arity`` fields (2: one graph, domain ``""``)."""
        return cls((pl.values[0], pl.values[1], pl.values[2] if arity > 2 else "") for pl in lines)

    def reach(self, name: str, domain: str) -> frozenset[str]:
        """``name`` and every role it holds in ``domain`` within the hop limit."""
        graph = self._out.get(domain)
        if graph is None or name not in graph:
            return frozenset((name,))
        key = (domain, name)
        found = self._memo.get(key)
        if found is None:
            seen = {name}
            frontier = [name]
            for _ in range(self._max_hops):
                nxt: list[str] = []
                for node in frontier:
                    for role in graph.get(node, ()):
                        if role not in seen:
                            seen.add(role)
                            nxt.append(role)
                if not nxt:
                    break
                frontier = nxt
            found = self._memo[key] = frozenset(seen)
        return found


def find_cycle(lines: Sequence[PolicyLine], arity: int) -> list[PolicyLine] | None:
    """The lines of one cycle in some domain's graph (in order), or ``None``."""
    by_domain: dict[str, dict[str, list[PolicyLine]]] = {}
    for pl in lines:
        domain = pl.values[2] if arity > 2 else ""
        by_domain.setdefault(domain, {}).setdefault(pl.values[0], []).append(pl)
    for graph in by_domain.values():
        state: dict[str, int] = {}  # 1 on the stack, 2 done
        for root in graph:
            if state.get(root):
                continue
            state[root] = 1
            path: list[PolicyLine] = []
            stack: list[tuple[str, int]] = [(root, 0)]
            while stack:
                node, i = stack[-1]
                edges = graph.get(node, [])
                if i == len(edges):
                    stack.pop()
                    state[node] = 2
                    if path:
                        path.pop()
                    continue
                stack[-1] = (node, i + 1)
                edge = edges[i]
                target = edge.values[1]
                st = state.get(target, 0)
                if st == 1:
                    start = next(
                        (k for k, pl in enumerate(path) if pl.values[0] == target), len(path)
                    )
                    return [*path[start:], edge]
                if st == 0:
                    state[target] = 1
                    path.append(edge)
                    stack.append((target, 0))
    return None
