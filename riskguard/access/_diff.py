"""``policy diff``: the grants two policy versions add and remove, each with a witness — a
request the two versions decide differently, found by building requests from the changed
line and verified by deciding it with both."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from riskguard.access._analysis import PolicyView, key_match
from riskguard.access._control import PLATFORM_DOMAIN
from riskguard.access._decision import Decision
from riskguard.access._lines import PolicyLine
from riskguard.access._model import ModelDef
from riskguard.access._snapshot import Snapshot, load_snapshot

__all__ = ["Change", "PolicyDiff", "Witness", "diff_policies"]

_MAX_TRIES = 5_000


class _Lines:
    def __init__(self, lines: Sequence[PolicyLine]) -> None:
        self._lines = list(lines)

    def load(self) -> list[PolicyLine]:
        return list(self._lines)


@dataclass(frozen=True)
class Witness:
    """A request and the two decisions, which differ."""

    request: dict[str, str]
    old: Decision
    new: Decision

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "request": self.request,
            "old": "allow" if self.old.allowed else "deny",
            "new": "allow" if self.new.allowed else "deny",
            "old_reason": self.old.reason,
            "new_reason": self.new.reason,
        }


@dataclass(frozen=True)
class Change:
    """A line only one version has, and a witness when the change alters a decision."""

    change: Literal["added", "removed"]
    line: PolicyLine
    witness: Witness | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "change": self.change,
            "location": self.line.location,
            "line": str(self.line),
            "witness": self.witness.to_json() if self.witness is not None else None,
        }


@dataclass(frozen=True)
class PolicyDiff:
    """The changes from an old policy to a new one."""

    changes: tuple[Change, ...]

    @property
    def differs(self) -> bool:
        """Whether some request is decided differently (a witness was found)."""
        return any(c.witness is not None for c in self.changes)

    @property
    def widening(self) -> tuple[Change, ...]:
        """Changes with a witness the new version allows and the old denied."""
        return tuple(c for c in self.changes if c.witness is not None and c.witness.new.allowed)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "differs": self.differs,
            "added": [c.to_json() for c in self.changes if c.change == "added"],
            "removed": [c.to_json() for c in self.changes if c.change == "removed"],
        }


def diff_policies(
    model: ModelDef, old: Sequence[PolicyLine], new: Sequence[PolicyLine]
) -> PolicyDiff:
    """Compare two versions of a policy under one model.

    :raises PolicyError: a version is invalid, or the model is outside the family.
    """
    snaps = (load_snapshot(model, _Lines(old)), load_snapshot(model, _Lines(new)))
    views = (PolicyView.of(model, old), PolicyView.of(model, new))
    old_keys = {(pl.ptype, *pl.values) for pl in old}
    new_keys = {(pl.ptype, *pl.values) for pl in new}
    changes: list[Change] = []
    sides: tuple[tuple[Literal["added", "removed"], Sequence[PolicyLine], set[Any]], ...] = (
        ("removed", old, new_keys),
        ("added", new, old_keys),
    )
    for kind, lines, others in sides:
        seen: set[tuple[str, ...]] = set()
        for pl in lines:
            key = (pl.ptype, *pl.values)
            if key in others or key in seen:
                continue
            seen.add(key)
            changes.append(Change(kind, pl, _witness(pl, views, snaps)))
    return PolicyDiff(tuple(changes))


def _witness(
    pl: PolicyLine, views: tuple[PolicyView, PolicyView], snaps: tuple[Snapshot, Snapshot]
) -> Witness | None:
    tokens = views[0].request_tokens
    for rvals in itertools.islice(_requests(pl, views), _MAX_TRIES):
        a, b = snaps[0].engine.decide(rvals), snaps[1].engine.decide(rvals)
        if a.allowed != b.allowed:
            return Witness(dict(zip(tokens, rvals, strict=True)), a, b)
    return None


def _holders(views: Sequence[PolicyView], role: str) -> list[str]:
    out: dict[str, None] = {}
    for v in views:
        doms = [*{v.grant_domain(g) for g in v.grants}]
        for sub in sorted(v.subjects):
            if v.chain(sub, role, doms) is not None:
                out[sub] = None
    out[role] = None
    return list(out)


def _requests(pl: PolicyLine, views: tuple[PolicyView, PolicyView]) -> Iterator[tuple[str, ...]]:
    view = views[0]
    if pl.ptype == "p":
        yield from _rule_requests(pl, _holders(views, view.subject(pl)), None, views)
        return
    user, role = pl.values[0], pl.values[1]
    dom = view.grant_domain(pl)
    subjects = [*_holders(views, user)]
    for v in views:
        reached = v.graphs.reach(role, dom) | v.graphs.reach(role, "*")
        for rule in v.rules:
            if v.subject(rule) in reached:
                fixed = dom if dom and "*" not in dom else None
                yield from _rule_requests(rule, subjects, fixed, views)


def _rule_requests(
    rule: PolicyLine,
    subjects: Sequence[str],
    domain: str | None,
    views: tuple[PolicyView, PolicyView],
) -> Iterator[tuple[str, ...]]:
    view = views[0]
    tokens = view.request_tokens
    attrs = [t for t in tokens if t not in ("sub", "dom", "obj", "act")]
    dom = view.value(rule, "dom") or "*"
    if domain is not None:
        doms = [domain]
    elif "*" not in dom:
        doms = [dom]
    else:
        doms = list(dict.fromkeys([*views[0].domains, *views[1].domains, PLATFORM_DOMAIN]))
    obj = view.value(rule, "obj") or ""
    known_objs = {o for v in views for r in v.rules if "*" not in (o := v.value(r, "obj") or "*")}
    objs = [obj] if "*" not in obj else sorted(o for o in known_objs if key_match(o, obj))
    if not objs:
        objs = [obj.replace("*", "x")]
    act = view.value(rule, "act") or "*"
    known_acts = {a for v in views for r in v.rules if "*" not in (a := v.value(r, "act") or "*")}
    acts = [act] if act != "*" else sorted(known_acts) or ["read"]
    for sub, d, o, a in itertools.product(subjects, doms, objs, acts):
        for extra in itertools.product(("", sub), repeat=len(attrs)):
            values = {
                "sub": sub,
                "dom": d,
                "obj": o,
                "act": a,
                **dict(zip(attrs, extra, strict=True)),
            }
            yield tuple(values.get(t, "") for t in tokens)
