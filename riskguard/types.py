"""Shared types and the plug-point Protocols that parts use to talk to each other.

Parts depend on these, not on each other's classes: ``crypto``, ``auth``, ``access``,
``fraud`` and ``retention`` emit audit events through an :class:`AuditRecorder` (in
production the :class:`riskguard.audit.AuditLog` that :class:`riskguard.Guard` builds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from riskguard.context import Principal

__all__ = ["AuditRecorder", "Outcome", "ResourceRef"]

Outcome = Literal["allow", "deny", "success", "failure", "error"]


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """What an event is about: ``type`` (``order``, ``customer.phone``, ``key``…), ``id``,
    and the tenant/merchant domain it belongs to."""

    type: str
    id: str | None = None
    tenant: str | None = None


@runtime_checkable
class AuditRecorder(Protocol):
    """Anything that records audit events (one verb).

    ``actor`` defaults to the principal in :mod:`riskguard.context`; ``subject`` names the
    data subject whose personal data ``details`` may hold, so that the log can encrypt it
    under that subject's key. ``details`` must be small and JSON-serialisable and must not
    hold secrets.
    """

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
    ) -> Any:
        """Append one event; return it."""
        ...
