"""Refresh-token records and the :class:`RefreshTokenStore` plug point.

Refresh tokens are opaque random strings; stores keep only their SHA-256
(:func:`hash_refresh_token`). Every token belongs to a *family*: the chain of tokens that
one grant produced by rotation. Each use of a token is a compare-and-set in the store
(:meth:`RefreshTokenStore.rotate`): it marks the token used and stores its successor in one
atomic step, or, when the token was already used, revokes the family in that same step.
Of two concurrent uses of one token exactly one rotates and the other is a reuse
(OAuth 2.0 Security BCP §4.14.2).

Each record also names the access token issued with it (``access_jti``, ``access_exp``).
Revoking a family returns those of the family's access tokens that may still be accepted,
so the issuer can put them on the deny-list. Verifiers keep checking only ``jti``; no
family id is put in access tokens, and verification costs nothing more.

Statuses :meth:`RefreshTokenStore.rotate` reports, checked in this order: ``unknown``
(never stored, or pruned), ``expired``, ``revoked`` (the family was revoked before),
``reused`` (the token was already used: the family is revoked now), ``rotated``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from riskguard.errors import StorageError

__all__ = [
    "MAX_LEEWAY",
    "AccessTokenRef",
    "MemoryRefreshTokenStore",
    "RefreshRecord",
    "RefreshTokenStore",
    "RotateResult",
    "RotateStatus",
    "check_successor",
    "hash_refresh_token",
]

#: The largest verifier leeway (seconds) supported (``[auth] leeway_s`` caps at 300):
#: stores return access tokens whose ``exp`` is within this of ``now`` or later.
MAX_LEEWAY = 300.0

RotateStatus = Literal["rotated", "reused", "revoked", "expired", "unknown"]


def hash_refresh_token(token: str) -> str:
    """The hex SHA-256 a store keeps instead of the refresh token.

    A plain, fast hash is enough: the tokens are 256-bit random values, so nobody can
    guess one from its hash and a slow password hash would only cost CPU on every refresh.
    """
    # No salt, no bcrypt/argon2: those defend low-entropy secrets (passwords) against
    # guessing; 256 random bits cannot be guessed, and an unsalted hash stays a lookup key.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessTokenRef(NamedTuple):
    """An access token issued with a refresh token: its ``jti`` and ``exp``."""

    jti: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """One stored refresh token and what it grants.

    ``token_hash`` is :func:`hash_refresh_token` of the token. ``generation`` counts from 1
    within the family. ``subject_type`` is ``user``, ``service`` or ``staff`` (as in
    :class:`riskguard.context.Principal`). ``claims`` holds extra access-token claims of
    the grant. ``used_at`` and ``revoked_at`` (the family's revocation) are state a store
    fills in on reads.
    """

    token_hash: str = field(repr=False)
    family_id: str
    generation: int
    client_id: str
    subject: str
    scope: str
    audience: str
    issued_at: float
    expires_at: float
    family_issued_at: float
    subject_type: str = "user"
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    jkt: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    access_jti: str | None = None
    access_exp: float | None = None
    used_at: float | None = None
    revoked_at: float | None = None

    @property
    def access(self) -> AccessTokenRef | None:
        """The access token issued with this refresh token, if recorded."""
        if self.access_jti is None or self.access_exp is None:
            return None
        return AccessTokenRef(self.access_jti, self.access_exp)


@dataclass(frozen=True, slots=True)
class RotateResult:
    """What :meth:`RefreshTokenStore.rotate` did.

    ``record`` is the presented token's record (``None`` when ``unknown``);
    ``access_tokens`` are the family's possibly live access tokens when the family is
    (now or already) revoked, for the deny-list.
    """

    status: RotateStatus
    record: RefreshRecord | None = None
    access_tokens: tuple[AccessTokenRef, ...] = ()


def check_successor(old: RefreshRecord, successor: RefreshRecord) -> None:
    """:raises ValueError: ``successor`` does not continue ``old``'s family."""
    if successor.family_id != old.family_id or successor.generation != old.generation + 1:
        raise ValueError("the successor must be the next generation of the same family")
    if successor.token_hash == old.token_hash:
        raise ValueError("the successor must be a new token")


@runtime_checkable
class RefreshTokenStore(Protocol):
    """Where refresh-token families live. Every method is atomic across processes."""

    def create(self, record: RefreshRecord) -> None:
        """Start a new family with its first token.

        :raises StorageError: the family or the token hash exists already.
        """
        ...

    def get(self, token_hash: str) -> RefreshRecord | None:
        """The record of ``token_hash`` with its state, or ``None``."""
        ...

    def rotate(self, token_hash: str, successor: RefreshRecord, *, now: float) -> RotateResult:
        """Use ``token_hash``: mark it used and store ``successor`` (status ``rotated``);
        if it was used before, revoke its family instead (``reused``). See the module
        docstring for the order of the statuses.

        :raises ValueError: ``successor`` is not the next generation of the token's family.
        """
        ...

    def revoke_family(
        self, family_id: str, *, now: float, reason: str
    ) -> tuple[AccessTokenRef, ...] | None:
        """Revoke a family (idempotent; the first revocation's time and reason are kept).

        :returns: the family's access tokens with ``exp`` after ``now - MAX_LEEWAY``, or
            ``None`` when the family is unknown.
        """
        ...

    def prune(self, *, now: float) -> int:
        """Delete tokens (and families) that expired before ``now``; return how many
        tokens. Stores with their own expiry (Redis TTLs) return 0."""
        ...


@dataclass
class _Family:
    expires_at: float
    tokens: list[str]
    revoked_at: float | None = None
    revoke_reason: str | None = None


class MemoryRefreshTokenStore:
    """A :class:`RefreshTokenStore` in one process's memory (tests, single process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, RefreshRecord] = {}
        self._families: dict[str, _Family] = {}

    def create(self, record: RefreshRecord) -> None:
        """Start a new family with its first token.

        :raises StorageError: the family or the token hash exists already.
        """
        with self._lock:
            if record.family_id in self._families or record.token_hash in self._tokens:
                raise StorageError("the refresh-token family or token exists already")
            self._tokens[record.token_hash] = replace(record, used_at=None, revoked_at=None)
            self._families[record.family_id] = _Family(record.expires_at, [record.token_hash])

    def get(self, token_hash: str) -> RefreshRecord | None:
        """The record of ``token_hash`` with its state, or ``None``."""
        with self._lock:
            rec = self._tokens.get(token_hash)
            if rec is None:
                return None
            return replace(rec, revoked_at=self._families[rec.family_id].revoked_at)

    def _access(self, fam: _Family, now: float) -> tuple[AccessTokenRef, ...]:
        refs = (self._tokens[h].access for h in fam.tokens if h in self._tokens)
        return tuple(r for r in refs if r is not None and r.expires_at > now - MAX_LEEWAY)

    def rotate(self, token_hash: str, successor: RefreshRecord, *, now: float) -> RotateResult:
        """Use ``token_hash`` and store ``successor`` in one step (see the Protocol).

        :raises ValueError: ``successor`` is not the next generation of the token's family.
        """
        with self._lock:
            rec = self._tokens.get(token_hash)
            if rec is None:
                return RotateResult("unknown")
            check_successor(rec, successor)
            fam = self._families[rec.family_id]
            rec = replace(rec, revoked_at=fam.revoked_at)
            if rec.expires_at <= now:
                return RotateResult("expired", rec)
            if fam.revoked_at is not None:
                return RotateResult("revoked", rec, self._access(fam, now))
            if rec.used_at is not None:
                fam.revoked_at, fam.revoke_reason = now, "reuse"
                return RotateResult("reused", rec, self._access(fam, now))
            if successor.token_hash in self._tokens:
                raise StorageError("the successor's token hash exists already")
            self._tokens[token_hash] = replace(rec, used_at=now, revoked_at=None)
            self._tokens[successor.token_hash] = replace(successor, used_at=None, revoked_at=None)
            fam.tokens.append(successor.token_hash)
            fam.expires_at = max(fam.expires_at, successor.expires_at)
            return RotateResult("rotated", rec)

    def revoke_family(
        self, family_id: str, *, now: float, reason: str
    ) -> tuple[AccessTokenRef, ...] | None:
        """Revoke a family (idempotent); its possibly live access tokens, or ``None``."""
        with self._lock:
            fam = self._families.get(family_id)
            if fam is None:
                return None
            if fam.revoked_at is None:
                fam.revoked_at, fam.revoke_reason = now, reason
            return self._access(fam, now)

    def prune(self, *, now: float) -> int:
        """Delete tokens and families that expired before ``now``; return how many tokens."""
        with self._lock:
            dead = [h for h, r in self._tokens.items() if r.expires_at <= now]
            for h in dead:
                del self._tokens[h]
            for fid, fam in list(self._families.items()):
                if fam.expires_at <= now:
                    del self._families[fid]
                else:
                    fam.tokens = [h for h in fam.tokens if h in self._tokens]
            return len(dead)

    def __len__(self) -> int:
        return len(self._tokens)
