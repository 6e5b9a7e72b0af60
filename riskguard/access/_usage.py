"""``policy least-privilege``: from audited ``access.decision`` events, the allow rules and
grants nobody used, and a reduced policy that still allows every observed request.

An event records the subject, domain, object, action, the *names* of the attributes given
(never their values) and the deciding lines. Each observed request is rebuilt (an attribute
is the subject itself or someone else, whichever reproduces the recorded decision) and
decided again on the current policy. A rule is used when it allowed an observed request; a
grant when it lies on the role chain to such a rule. Deny rules are always kept, and so is
every grant through which a subject reaches a deny it would not reach otherwise, so the
reduced policy never allows more.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from riskguard.access._analysis import PolicyView
from riskguard.access._diff import PolicyDiff, _Lines, diff_policies
from riskguard.access._lines import PolicyLine
from riskguard.access._model import ModelDef
from riskguard.access._snapshot import load_snapshot

__all__ = ["AuditEventLike", "Observed", "UsageReport", "least_privilege", "observed_requests"]

_SOMEONE_ELSE = "\x00someone-else"


class AuditEventLike(Protocol):
    """What is read from an audit event (:class:`riskguard.audit.AuditEvent` has it)."""

    seq: int
    action: str
    outcome: str
    actor: dict[str, Any] | None
    resource: dict[str, Any] | None

    @property
    def details(self) -> dict[str, Any]:
        """The event's details."""
        ...


@dataclass(frozen=True)
class Observed:
    """One audited request, rebuilt, and the recorded outcome."""

    request: tuple[str, ...]
    allowed: bool
    seq: int


@dataclass(frozen=True)
class UsageReport:
    """Unused rules, grants and roles; the reduced policy and its proof."""

    observed: tuple[Observed, ...]
    unused_rules: tuple[PolicyLine, ...]
    unused_grants: tuple[PolicyLine, ...]
    unused_roles: tuple[str, ...]
    reduced: tuple[PolicyLine, ...]
    diff: PolicyDiff
    lost: tuple[Observed, ...] = field(default=())  # observed allows the reduced policy denies

    @property
    def verified(self) -> bool:
        """Every observed allow is still allowed, and the reduction allows nothing new."""
        return not self.lost and not self.diff.widening

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "observed": len(self.observed),
            "observed_allows": sum(o.allowed for o in self.observed),
            "unused_rules": [{"location": p.location, "rule": str(p)} for p in self.unused_rules],
            "unused_grants": [
                {"location": p.location, "grant": str(p)} for p in self.unused_grants
            ],
            "unused_roles": list(self.unused_roles),
            "reduced_lines": len(self.reduced),
            "verified": self.verified,
            "lost": [o.seq for o in self.lost],
            "widening": [c.to_json() for c in self.diff.widening],
        }


def observed_requests(
    model: ModelDef, lines: Sequence[PolicyLine], events: Iterable[AuditEventLike]
) -> list[Observed]:
    """Rebuild the requests of ``access.decision`` events (others are skipped)."""
    snap = load_snapshot(model, _Lines(lines))
    tokens = snap.request_tokens
    attrs = [t for t in tokens if t not in ("sub", "dom", "obj", "act")]
    out: list[Observed] = []
    for ev in events:
        if ev.action != "access.decision" or ev.resource is None:
            continue
        details = ev.details
        sub = details.get("sub") or (ev.actor or {}).get("id")
        act = details.get("act")
        if not sub or not act:
            continue
        allowed = ev.outcome == "allow"
        base = {"sub": sub, "dom": ev.resource.get("tenant") or "", "obj": ev.resource["type"]}
        base["act"] = act
        given = [a for a in attrs if a in details.get("attributes", ())]
        recorded = details.get("lines")
        best: tuple[str, ...] | None = None
        for choice in itertools.product((sub, _SOMEONE_ELSE), repeat=len(given)):
            values = base | dict(zip(given, choice, strict=True))
            rvals = tuple(values.get(t, "") for t in tokens)
            d = snap.engine.decide(rvals)
            if d.allowed != allowed:
                continue
            if best is None:
                best = rvals
            if recorded is None or list(d.lines) == recorded:
                best = rvals
                break
        if best is None:  # the current policy decides it differently: keep it as observed
            best = tuple({**base, **dict.fromkeys(given, sub)}.get(t, "") for t in tokens)
        out.append(Observed(best, allowed, ev.seq))
    return out


def least_privilege(
    model: ModelDef, lines: Sequence[PolicyLine], observed: Sequence[Observed]
) -> UsageReport:
    """The reduction of ``lines`` to what ``observed`` used, and its proof.

    :raises PolicyError: the policy is invalid or its model outside the family.
    """
    view = PolicyView.of(model, lines)
    snap = load_snapshot(model, _Lines(lines))
    used_rules: set[PolicyLine] = set()
    used_grants: set[PolicyLine] = set()
    allowed_now: list[Observed] = []
    for o in observed:
        d = snap.engine.decide(o.request)
        if not d.allowed:
            continue
        allowed_now.append(o)
        domains = view.role_domains(o.request)
        sub = o.request[view.spec.subject.r_index]
        for rule in d.allows:
            used_rules.add(rule)
            chain = view.chain(sub, view.subject(rule), domains)
            used_grants.update(chain or ())
    kept_grants = set(used_grants) | _deny_grants(view, used_grants)
    reduced = tuple(
        pl
        for pl in lines
        if (pl.ptype == "p" and (view.is_deny(pl) or pl in used_rules))
        or (pl.ptype != "p" and (pl.ptype != view.spec.subject.g or pl in kept_grants))
    )
    unused_rules = tuple(pl for pl in view.rules if not view.is_deny(pl) and pl not in used_rules)
    unused_grants = tuple(pl for pl in view.grants if pl not in kept_grants)
    used_roles = {view.subject(p) for p in used_rules} | {g.values[1] for g in used_grants}
    unused_roles = tuple(sorted(view.role_names - view.subjects - used_roles))
    rsnap = load_snapshot(model, _Lines(reduced))
    lost = tuple(o for o in allowed_now if not rsnap.engine.decide(o.request).allowed)
    proof = diff_policies(model, lines, reduced)
    return UsageReport(
        tuple(observed), unused_rules, unused_grants, unused_roles, reduced, proof, lost
    )


def _deny_grants(view: PolicyView, used: set[PolicyLine]) -> set[PolicyLine]:
    """Unused grants to keep: removing them would take a deny away from a subject that
    still holds something through a kept grant, or a deny inherited by a role."""
    deny_roles = {view.subject(p) for p in view.rules if view.is_deny(p)}
    keep: set[PolicyLine] = set()
    users = view.subjects
    for g in view.grants:
        if g in used:
            continue
        user, dom = g.values[0], view.grant_domain(g)
        reaches_deny = bool(view.graphs.reach(g.values[1], dom) & deny_roles)
        if not reaches_deny:
            continue
        # role inheritance carries a deny every holder must keep; a subject that keeps
        # some grant must keep the denies it had too
        if user not in users or any(u in used for u in view.grants if u.values[0] == user):
            keep.add(g)
    return keep
