"""Authorization codes: single-use, short-lived, bound to what the user approved.

A code is a 256-bit random string handed to the client through the redirect; stores keep
only its SHA-256 (like refresh tokens: it cannot be guessed, so a plain hash is a safe
lookup key). Its record binds it to the ``client_id``, the exact ``redirect_uri``, the
PKCE S256 ``code_challenge``, and the user's consent (subject, scope, tenant, roles).

:meth:`AuthorizationCodeStore.consume` is a compare-and-set: of two redemptions of one
code exactly one gets ``ok``; the other gets ``reused``. After a successful redemption the
server :meth:`~AuthorizationCodeStore.attach`\\ es the tokens it issued, so that a later
reuse can revoke them (RFC 6749 §4.1.2: a code used twice means it leaked). ``attach``
reports whether a reuse slipped in between consume and attach, and the server then
revokes at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from riskguard.errors import StorageError

__all__ = [
    "AuthorizationCode",
    "AuthorizationCodeStore",
    "ConsumeResult",
    "MemoryAuthorizationCodeStore",
    "hash_code",
]

ConsumeStatus = Literal["ok", "reused", "expired", "unknown"]


def hash_code(code: str) -> str:
    """The hex SHA-256 a store keeps instead of the authorization code."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """One issued authorization code and the grant it stands for.

    ``redirect_uri`` is ``None`` when the authorization request omitted it (the client
    has a single registered URI); the token request must then omit it too.
    ``access_jti``/``access_exp``/``family_id`` are filled in by ``attach``;
    ``used_at`` by ``consume``.
    """

    code_hash: str = field(repr=False)
    client_id: str
    redirect_uri: str | None
    code_challenge: str
    subject: str
    scope: str
    issued_at: float
    expires_at: float
    subject_type: str = "user"
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    used_at: float | None = None
    access_jti: str | None = None
    access_exp: float | None = None
    family_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """What :meth:`AuthorizationCodeStore.consume` did; ``record`` is ``None`` when
    ``unknown``. On ``reused`` the record names the tokens issued from the code."""

    status: ConsumeStatus
    record: AuthorizationCode | None = None


@runtime_checkable
class AuthorizationCodeStore(Protocol):
    """Where authorization codes live between the redirect and the token request."""

    def create(self, record: AuthorizationCode) -> None:
        """Store a new code.

        :raises StorageError: the hash exists already.
        """
        ...

    def consume(self, code_hash: str, *, now: float) -> ConsumeResult:
        """Redeem a code once: ``ok`` marks it used; a used code is ``reused`` (and stays
        used); ``expired`` and ``unknown`` change nothing."""
        ...

    def attach(
        self, code_hash: str, *, access_jti: str, access_exp: float, family_id: str | None
    ) -> bool:
        """Record the tokens issued from a redeemed code. ``False`` when the code was
        presented again since it was consumed (the caller must revoke them)."""
        ...

    def prune(self, *, now: float) -> int:
        """Delete codes that expired before ``now`` minus a grace period kept for reuse
        detection; return how many."""
        ...


#: Redeemed codes are kept this long past their expiry, so that a reuse is still
#: recognised (and revokes) rather than reported as an unknown code.
REUSE_MEMORY = 3600.0


class MemoryAuthorizationCodeStore:
    """An :class:`AuthorizationCodeStore` in one process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._reused: set[str] = set()

    def create(self, record: AuthorizationCode) -> None:
        """Store a new code.

        :raises StorageError: the hash exists already.
        """
        with self._lock:
            if record.code_hash in self._codes:
                raise StorageError("the authorization code exists already")
            self._codes[record.code_hash] = replace(record, used_at=None)

    def consume(self, code_hash: str, *, now: float) -> ConsumeResult:
        """Redeem a code once (see the Protocol)."""
        with self._lock:
            rec = self._codes.get(code_hash)
            if rec is None:
                return ConsumeResult("unknown")
            if rec.used_at is not None:
                self._reused.add(code_hash)
                return ConsumeResult("reused", rec)
            if rec.expires_at <= now:
                return ConsumeResult("expired", rec)
            self._codes[code_hash] = replace(rec, used_at=now)
            return ConsumeResult("ok", rec)

    def attach(
        self, code_hash: str, *, access_jti: str, access_exp: float, family_id: str | None
    ) -> bool:
        """Record the tokens issued from a redeemed code (see the Protocol)."""
        with self._lock:
            rec = self._codes[code_hash]
            self._codes[code_hash] = replace(
                rec, access_jti=access_jti, access_exp=access_exp, family_id=family_id
            )
            return code_hash not in self._reused

    def prune(self, *, now: float) -> int:
        """Delete codes expired more than :data:`REUSE_MEMORY` ago; return how many."""
        with self._lock:
            dead = [h for h, r in self._codes.items() if r.expires_at + REUSE_MEMORY <= now]
            for h in dead:
                del self._codes[h]
                self._reused.discard(h)
            return len(dead)

    def __len__(self) -> int:
        return len(self._codes)
