"""Test doubles for riskguard's plug points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from riskguard.context import Principal, current_principal
from riskguard.types import Outcome, ResourceRef


@dataclass
class Recorded:
    action: str
    outcome: Outcome
    resource: ResourceRef | None
    reason: str | None
    details: dict[str, Any]
    actor: Principal | None
    subject: str | None


@dataclass
class RecordingAudit:
    """An :class:`riskguard.types.AuditRecorder` that keeps events in a list."""

    events: list[Recorded] = field(default_factory=list)

    def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        resource: ResourceRef | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: Principal | None = None,
        subject: str | None = None,
    ) -> Recorded:
        ev = Recorded(
            action,
            outcome,
            resource,
            reason,
            dict(details or {}),
            actor or current_principal(),
            subject,
        )
        self.events.append(ev)
        return ev

    def actions(self) -> list[str]:
        return [e.action for e in self.events]
