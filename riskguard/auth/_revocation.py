"""Revoking refresh-token families and their access tokens, and auditing it.

When a family is revoked — a used refresh token came back (reuse), RFC 7009 revocation,
logout, an operator — the refresh store marks it revoked and hands back the family's
access tokens that a verifier may still accept; :class:`Revocations` puts those on the
deny-list until their ``exp`` plus the leeway, and records the audit event. Details name
ids only (``jti``, family id, ``client_id``), never a token or a hash of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from riskguard.auth._denylist import DenyListStore
from riskguard.auth._errors import GrantRejected
from riskguard.auth._refresh import AccessTokenRef, RefreshRecord, RefreshTokenStore, RotateResult
from riskguard.context import Principal, SubjectType, current_principal
from riskguard.errors import StorageError
from riskguard.types import AuditRecorder, Outcome, ResourceRef

__all__ = ["MESSAGES", "AuthEvents", "Revocations", "actor_for"]

_MAX_LISTED_JTIS = 20  # how many revoked jtis an audit event names (the count is exact)

#: The message of each :class:`GrantRejected` code: what happened, never the token.
MESSAGES = {
    "invalid_refresh_token": "the refresh token is not valid",
    "expired": "the refresh token has expired",
    "reused": "the refresh token was already used; its grant has been revoked",
    "revoked": "the refresh token's grant has been revoked",
    "client_mismatch": "the refresh token was issued to another client",
    "dpop_mismatch": "the refresh token is bound to another DPoP key",
    "scope_exceeded": "the requested scope exceeds the scope originally granted",
}


def actor_for(
    subject: str, subject_type: str, tenant: str | None, roles: tuple[str, ...]
) -> Principal:
    """The audit actor for a token's subject."""
    kind: SubjectType = "service" if subject_type == "service" else (
        "staff" if subject_type == "staff" else "user")  # fmt: skip
    return Principal(subject=subject, type=kind, domain=tenant, roles=roles)


def _record_actor(rec: RefreshRecord | None) -> Principal | None:
    return None if rec is None else actor_for(rec.subject, rec.subject_type, rec.tenant, rec.roles)


def _family(family_id: str, rec: RefreshRecord | None) -> ResourceRef:
    return ResourceRef("refresh_family", family_id, rec.tenant if rec else None)


class AuthEvents:
    """Records the auth events of one service (nothing without an audit recorder)."""

    def __init__(self, audit: AuditRecorder | None) -> None:
        self._audit = audit

    def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        actor: Principal | None,
        resource: ResourceRef | None,
        details: Mapping[str, Any],
        reason: str | None = None,
    ) -> None:
        """Record one event. A principal in context (an operator revoking, a logged-in
        user) is the actor; at the token endpoint there is none, and ``actor`` is."""
        if self._audit is None:
            return
        if current_principal() is not None:
            actor = None
        self._audit.record(
            action, outcome, resource=resource, reason=reason, details=details, actor=actor
        )

    def refused(self, rec: RefreshRecord | None, code: str, client_id: object) -> NoReturn:
        """Audit a refused refresh grant (``auth.token_refresh`` failure) and raise.

        :raises GrantRejected: always, with ``code``.
        """
        details: dict[str, Any] = {
            "client_id": client_id[:255] if isinstance(client_id, str) else None
        }
        if rec is not None:
            details.update(family=rec.family_id, generation=rec.generation)
        self.record(
            "auth.token_refresh", "failure", actor=_record_actor(rec), reason=code,
            resource=None if rec is None else _family(rec.family_id, rec), details=details,
        )  # fmt: skip
        raise GrantRejected(code, MESSAGES[code])


class Revocations:
    """Family revocation for one service: refresh store, deny-list and events together.

    :param leeway: the verifiers' leeway; a revoked access token stays on the deny-list
        until its ``exp`` plus this.
    """

    def __init__(
        self, store: RefreshTokenStore, deny: DenyListStore, events: AuthEvents, leeway: float
    ) -> None:
        self._store = store
        self._deny_list = deny
        self._events = events
        self._leeway = leeway

    def deny(
        self, refs: Sequence[AccessTokenRef], now: float
    ) -> tuple[list[str], StorageError | None]:
        """Deny-list the access tokens still acceptable at ``now``; the ids done, and the
        error that stopped it, if one did."""
        denied: list[str] = []
        for ref in refs:
            until = ref.expires_at + self._leeway  # verifiers accept it until then
            if until <= now:
                continue
            try:
                self._deny_list.revoke(ref.jti, expires_at=until, now=now)
            except StorageError as exc:
                return denied, exc
            denied.append(ref.jti)
        return denied, None

    def revoke_family(
        self, family_id: str, now: float, reason: str, rec: RefreshRecord | None
    ) -> bool:
        """Revoke a family and its access tokens; audit ``auth.token_revoke``.

        :returns: ``False`` when the family is unknown.
        :raises StorageError: a store failed (audited as ``error`` when the deny-list did).
        """
        refs = self._store.revoke_family(family_id, now=now, reason=reason)
        if refs is None:
            return False
        denied, failed = self.deny(refs, now)
        details: dict[str, Any] = {
            "family": family_id,
            "revoked_access_tokens": len(denied),
            "jtis": denied[:_MAX_LISTED_JTIS],
        }
        if rec is not None:
            details["client_id"] = rec.client_id
        if failed is not None:
            details["deny_list"] = "failed"
        self._events.record(
            "auth.token_revoke", "success" if failed is None else "error",
            actor=_record_actor(rec), reason=reason, details=details,
            resource=_family(family_id, rec),
        )  # fmt: skip
        if failed is not None:
            raise failed
        return True

    def rotation_refused(
        self, result: RotateResult, rec: RefreshRecord, client_id: str, now: float
    ) -> NoReturn:
        """Handle a rotation that did not rotate: audit, deny-list a revoked family's
        access tokens, raise.

        :raises GrantRejected: ``reused``, ``revoked``, ``expired`` or
            ``invalid_refresh_token``.
        :raises StorageError: the deny-list failed (the family is revoked all the same).
        """
        if result.status not in ("reused", "revoked"):
            code = "expired" if result.status == "expired" else "invalid_refresh_token"
            self._events.refused(rec if result.status == "expired" else None, code, client_id)
        # The family is revoked (by this call, or before): its access tokens go on the
        # deny-list. Doing it again on every later presentation heals a deny-list write
        # that failed the first time.
        denied, failed = self.deny(result.access_tokens, now)
        details: dict[str, Any] = {
            "client_id": rec.client_id,
            "family": rec.family_id,
            "generation": rec.generation,
            "revoked_access_tokens": len(denied),
            "jtis": denied[:_MAX_LISTED_JTIS],
        }
        if failed is not None:
            details["deny_list"] = "failed"
        if result.status == "reused":
            action, reason = "auth.refresh_reuse", "a used refresh token came back: family revoked"
        else:
            action, reason = "auth.token_refresh", "revoked"
        self._events.record(
            action, "failure", actor=_record_actor(rec), reason=reason, details=details,
            resource=_family(rec.family_id, rec),
        )  # fmt: skip
        if failed is not None:
            raise failed
        raise GrantRejected(result.status, MESSAGES[result.status])
