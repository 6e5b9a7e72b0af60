"""A decision and the policy lines that made it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from riskguard.access._lines import PolicyLine

__all__ = ["Decision", "Engine", "EngineKind"]

EngineKind = Literal["compiled", "casbin"]
_SHOWN = 5  # overridden rules named in a reason


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request.

    ``allows`` and ``denies`` are the matching allow and deny rules in file order (the
    Casbin fallback reports the one rule Casbin names). ``roles`` are the subject's
    effective roles in the request's domain (compiled engine only). ``note`` explains a
    request refused before the policy was consulted (no subject, say).
    """

    allowed: bool
    allows: tuple[PolicyLine, ...] = ()
    denies: tuple[PolicyLine, ...] = ()
    roles: tuple[str, ...] = ()
    engine: EngineKind = "compiled"
    note: str | None = None

    @property
    def rule(self) -> PolicyLine | None:
        """The rule that decided: the first matching deny for a deny, the first matching
        allow for an allow; ``None`` when no rule matched."""
        if not self.allowed and self.denies:
            return self.denies[0]
        if self.allowed and self.allows:
            return self.allows[0]
        return None

    @property
    def overridden(self) -> tuple[PolicyLine, ...]:
        """The allow rules a matching deny overrode (empty unless denied by a rule)."""
        return self.allows if not self.allowed and self.denies else ()

    @property
    def lines(self) -> tuple[int, ...]:
        """Line numbers of the deciding rule(s): all matching denies of a deny by rule, all
        matching allows of an allow."""
        rules = self.denies if not self.allowed else self.allows
        return tuple(r.line for r in rules)

    @property
    def reason(self) -> str:
        """One line for people and the audit log: ``allowed by policy.csv:42``."""
        if self.note is not None:
            return self.note
        rule = self.rule
        if self.allowed:
            return f"allowed by {rule.location}" if rule else "allowed: no deny rule matched"
        if rule is None:
            return "denied: no rule allows it"
        text = f"denied by {rule.location}"
        over = self.overridden
        if over:
            text += ", overriding " + ", ".join(r.location for r in over[:_SHOWN])
            if len(over) > _SHOWN:
                text += f" and {len(over) - _SHOWN} more"
        return text


class Engine(Protocol):
    """What decides a request given as a tuple in the model's request-token order."""

    kind: EngineKind

    def decide(self, rvals: tuple[str, ...]) -> Decision:
        """Decide one request.

        :raises PolicyError: the model fails on this request (Casbin fallback only).
        """
        ...
