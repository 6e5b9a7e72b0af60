"""The audit event: what callers record (:class:`PendingEvent`) and what the log stores
(:class:`AuditEvent`, with ``seq``, ``prev_hash`` and ``hash``)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from riskguard.audit._canonical import (
    canonical_json,
    canonical_parts,
    chain_hash,
    check_json_value,
    event_canonical,
    format_ts,
    parse_ts,
)
from riskguard.context import Principal, current_principal, current_request
from riskguard.errors import AuditError
from riskguard.types import ResourceRef

__all__ = [
    "OUTCOMES",
    "AuditEvent",
    "DetailsEncoder",
    "PendingEvent",
    "PlainDetails",
    "build_event",
]

OUTCOMES = frozenset({"allow", "deny", "success", "failure", "error"})
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MAX_SHORT = 255


class DetailsEncoder(Protocol):
    """Turns an event's ``details`` into what is stored and hashed (one verb).

    The default keeps them as they are. Once crypto lands, an encoder encrypts the personal
    data in them under the data subject's key: the chain covers the ciphertext, so shredding
    the key later leaves the chain valid. Verification never calls the encoder.
    """

    def encode(self, details: Mapping[str, Any], subject: str | None) -> Mapping[str, Any]:
        """The details to store for an event about data subject ``subject``."""
        ...


class PlainDetails:
    """The default :class:`DetailsEncoder`: details are stored as given."""

    def encode(self, details: Mapping[str, Any], subject: str | None) -> Mapping[str, Any]:
        """Return ``details`` unchanged."""
        return details


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event not yet in the log (no ``seq`` or hashes yet).

    ``parts`` is its canonical text around ``prev_hash`` and ``seq`` (see
    :func:`~riskguard.audit._canonical.canonical_parts`), built once when it is recorded.
    """

    id: str
    ts: str
    action: str
    outcome: str
    actor: dict[str, Any] | None
    resource: dict[str, Any] | None
    reason: str | None
    request_id: str | None
    details_json: str
    parts: tuple[str, str, str] = field(default=("", "", ""), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.parts[0]:
            object.__setattr__(self, "parts", canonical_parts(
                id=self.id, ts=self.ts, action=self.action, outcome=self.outcome,
                actor=self.actor, resource=self.resource, reason=self.reason,
                request_id=self.request_id, details_json=self.details_json,
            ))  # fmt: skip


@dataclass(slots=True)
class AuditEvent:
    """One event as the log holds it. ``details_json`` is the canonical details text.

    Treat it as read-only: changing a field does not change the log, only this copy (and
    makes :meth:`compute_hash` disagree with ``hash``). Not frozen because sealing builds
    one per appended event and a frozen dataclass costs twice as much to create.
    """

    seq: int
    id: str
    ts: str
    action: str
    outcome: str
    actor: dict[str, Any] | None
    resource: dict[str, Any] | None
    reason: str | None
    request_id: str | None
    details_json: str
    prev_hash: str
    hash: str

    @property
    def details(self) -> dict[str, Any]:
        """The stored details as a dict."""
        value: dict[str, Any] = json.loads(self.details_json)
        return value

    @property
    def time(self) -> datetime:
        """``ts`` as an aware datetime."""
        return parse_ts(self.ts)

    def canonical(self, seq: int | None = None) -> str:
        """The canonical text the hash covers (optionally as if at another ``seq``)."""
        return event_canonical(
            id=self.id,
            seq=self.seq if seq is None else seq,
            ts=self.ts,
            action=self.action,
            outcome=self.outcome,
            actor=self.actor,
            resource=self.resource,
            reason=self.reason,
            request_id=self.request_id,
            details_json=self.details_json,
            prev_hash=self.prev_hash,
        )

    def compute_hash(self, seq: int | None = None) -> str:
        """The chain hash of this event's content (optionally as if at another ``seq``)."""
        return chain_hash(self.prev_hash, self.canonical(seq))

    def export_line(self) -> str:
        """The event's line in an export file: ``{"event":<canonical>,"hash":"<hex>"}``."""
        return '{"event":' + self.canonical() + ',"hash":"' + self.hash + '"}'

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "seq": self.seq,
            "id": self.id,
            "ts": self.ts,
            "action": self.action,
            "outcome": self.outcome,
            "actor": self.actor,
            "resource": self.resource,
            "reason": self.reason,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def seal(cls, pending: PendingEvent, seq: int, prev_hash: str) -> AuditEvent:
        """Give ``pending`` its place in the chain."""
        prefix, middle, suffix = pending.parts
        canonical = prefix + '"' + prev_hash + '"' + middle + str(seq) + suffix
        return cls(
            seq,
            pending.id,
            pending.ts,
            pending.action,
            pending.outcome,
            pending.actor,
            pending.resource,
            pending.reason,
            pending.request_id,
            pending.details_json,
            prev_hash,
            chain_hash(prev_hash, canonical),
        )


def _short(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > _MAX_SHORT:
        raise AuditError(f"{name} is longer than {_MAX_SHORT} characters")
    return value


def build_event(
    action: str,
    outcome: str,
    *,
    resource: ResourceRef | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    actor: Principal | None = None,
    subject: str | None = None,
    encoder: DetailsEncoder | None = None,
    max_details_bytes: int = 8192,
    now: datetime | None = None,
) -> PendingEvent:
    """Validate and encode one event, reading actor and request from the context.

    :raises AuditError: a malformed action or outcome, details that are not JSON-
        serialisable (the path to the bad value is named), or details over the size cap.
    """
    if not isinstance(action, str) or not _ACTION_RE.match(action) or len(action) > 100:
        raise AuditError(
            f"action {action!r} must be dotted lowercase words, e.g. 'auth.login'",
        )
    if outcome not in OUTCOMES:
        raise AuditError(f"outcome {outcome!r} must be one of {', '.join(sorted(OUTCOMES))}")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 4096):
        raise AuditError("reason must be a string of at most 4096 characters")
    raw = dict(details or {})
    try:
        check_json_value(raw)
        encoded = dict((encoder or PlainDetails()).encode(raw, subject))
        check_json_value(encoded)
        details_json = canonical_json(encoded)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"event {action!r}: details are not serialisable: {exc}") from None
    size = len(details_json.encode("utf-8"))
    if size > max_details_bytes:
        raise AuditError(
            f"event {action!r}: details are {size} bytes, over the cap of {max_details_bytes}",
            hint="record identifiers, not payloads; or raise [audit] max_details_bytes",
        )
    principal = actor if actor is not None else current_principal()
    req = current_request()
    actor_d = None
    if principal is not None:
        actor_d = {
            "id": _short(principal.subject, "actor id"),
            "type": principal.type,
            "tenant": _short(principal.domain, "actor tenant"),
            "roles": [_short(r, "role") for r in principal.roles],
            "ip": _short(req.client_ip if req else None, "client ip"),
        }
    resource_d = None
    if resource is not None:
        resource_d = {
            "type": _short(resource.type, "resource type"),
            "id": _short(resource.id, "resource id"),
            "tenant": _short(resource.tenant, "resource tenant"),
        }
    return PendingEvent(
        id=uuid.uuid4().hex,
        ts=format_ts(now or datetime.now(UTC)),
        action=action,
        outcome=outcome,
        actor=actor_d,
        resource=resource_d,
        reason=reason,
        request_id=_short(req.request_id if req else None, "request id"),
        details_json=details_json,
    )
