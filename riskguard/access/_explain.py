"""Why a request is allowed or denied: the role chain, the deciding rules, and for a deny
that no rule made, the nearest rule and the fields it fails on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riskguard.access._analysis import PolicyView
from riskguard.access._control import AccessControl
from riskguard.access._decision import Decision
from riskguard.access._lines import PolicyLine

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Nearest:
    """The allow rule closest to matching a denied request."""

    rule: PolicyLine
    failed: tuple[tuple[str, str, str], ...]  # (token, rule value, request value)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "location": self.rule.location,
            "rule": str(self.rule),
            "failed": [{"field": f, "rule": r, "request": q} for f, r, q in self.failed],
        }


@dataclass(frozen=True)
class Explanation:
    """A decision with its role chains, deciding and overridden rules."""

    request: dict[str, str]
    decision: Decision
    chains: dict[str, tuple[PolicyLine, ...]]  # role -> grants from the subject to it
    nearest: Nearest | None
    sub_index: int = 0  # the rule token naming the role

    def chain_text(self, role: str) -> str:
        """``alice → merchant_owner → merchant_staff``."""
        grants = self.chains.get(role, ())
        return " → ".join([self.request["sub"], *(g.values[1] for g in grants)])

    def lines(self) -> list[str]:
        """The explanation for people, one line each."""
        d, r = self.decision, self.request
        attrs = " ".join(
            f"{k}={v}" for k, v in r.items() if v and k not in ("sub", "dom", "obj", "act")
        )
        head = f"{'ALLOW' if d.allowed else 'DENY'}  {r['sub']} {r['dom']} {r['obj']} {r['act']}"
        out = [head + (f"  ({attrs})" if attrs else ""), f"  {d.reason}"]
        roles = [x for x in self.chains if x != r["sub"]]
        if roles:
            out.append("  roles:")
            for role in roles:
                via = ", ".join(g.location for g in self.chains[role])
                out.append(f"    {self.chain_text(role)}  ({via})")
        else:
            out.append("  roles: none (the subject holds no grant in this domain)")
        for label, rules in (("allowed by", d.allows), ("denied by", d.denies)):
            for pl in rules:
                out.append(f"  {label} {pl.location}: {pl}  [{self._via(pl)}]")
        if d.overridden:
            out.append("  the deny overrides " + ", ".join(pl.location for pl in d.overridden))
        if self.nearest is not None:
            n = self.nearest
            out.append(f"  nearest rule {n.rule.location}: {n.rule}")
            for f, rv, qv in n.failed:
                out.append(f"    fails on {f}: the rule has {rv!r}, the request {qv!r}")
        return out

    def _via(self, pl: PolicyLine) -> str:
        role = pl.values[self.sub_index]
        return self.chain_text(role) if role in self.chains else role

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        d = self.decision

        def rule(pl: PolicyLine) -> dict[str, Any]:
            return {"location": pl.location, "rule": str(pl), "via": self._via(pl)}

        return {
            "request": self.request,
            "allowed": d.allowed,
            "decision": "allow" if d.allowed else "deny",
            "reason": d.reason,
            "roles": {
                role: {
                    "chain": self.chain_text(role),
                    "grants": [g.location for g in self.chains[role]],
                }
                for role in self.chains
                if role != self.request["sub"]
            },
            "rule": rule(d.rule) if d.rule is not None else None,
            "allows": [rule(pl) for pl in d.allows],
            "denies": [rule(pl) for pl in d.denies],
            "overridden": [rule(pl) for pl in d.overridden],
            "nearest": self.nearest.to_json() if self.nearest is not None else None,
        }


def explain(ac: AccessControl, sub: str, dom: str, obj: str, act: str, **attrs: str) -> Explanation:
    """Decide the request (without auditing it) and explain the decision.

    :raises PolicyError: the model is outside the family the tools analyse.
    :raises TypeError: an attribute the model does not define.
    """
    snap = ac.snapshot  # one policy version for the decision and the explanation
    view = PolicyView.of(snap.model, snap.lines)
    decision = ac._decide(snap, sub, dom, obj, act, attrs)[0]
    values = {"sub": sub, "dom": dom, "obj": obj, "act": act, **attrs}
    request = {t: values.get(t, "") for t in view.request_tokens}
    rvals = tuple(request.values())
    roles = view.roles_of(sub, rvals)
    domains = view.role_domains(rvals)
    chains: dict[str, tuple[PolicyLine, ...]] = {}
    for role in roles:
        found = view.chain(sub, role, domains)
        if found is not None:
            chains[role] = found
    chains = dict(sorted(chains.items(), key=lambda kv: (len(kv[1]), kv[0])))
    nearest = None
    if not decision.allowed and not decision.denies:
        nearest = _nearest(view, rvals, roles)
    return Explanation(request, decision, chains, nearest, view.spec.subject.p_index)


def _nearest(view: PolicyView, rvals: tuple[str, ...], roles: frozenset[str]) -> Nearest | None:
    best: tuple[tuple[int, int, int], Nearest] | None = None
    for pos, pl in enumerate(view.rules):
        if view.is_deny(pl):
            continue
        failed = view.failures(pl, rvals, roles)
        held = view.subject(pl) in roles
        key = (0 if held else 1, len(failed), pos)
        if best is None or key < best[0]:
            best = (key, Nearest(pl, tuple(failed)))
    return best[1] if best is not None else None
