"""The deny-list plug point: revoked token ids (``jti``).

:class:`DenyList` is the Protocol the verifier asks (one verb); :class:`DenyListStore`
adds the verb the issuer uses, ``revoke``. :class:`MemoryDenyList` is the in-memory
implementation; :class:`~riskguard.auth.SqlDenyList` and ``RedisDenyList`` share one list
between processes and pass the same test suite. A store that fails raises
(``StorageError``): the verifier lets that propagate, so an unreachable deny-list rejects
requests instead of waving revoked tokens through.

An entry lives until ``expires_at``, the time after which no verifier accepts the token
anyway (its ``exp`` plus the verifiers' leeway); revoking a token that is already past it
stores nothing. ``is_revoked`` does not look at the clock: an entry counts until it is
pruned (SQL, memory: ``prune(now=)``) or its TTL runs out (Redis), which can only err
towards refusing a token that has expired anyway.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["MAX_JTI_LENGTH", "DenyList", "DenyListStore", "MemoryDenyList", "check_jti"]

#: Longest ``jti`` a deny-list stores (the SQL column's width).
MAX_JTI_LENGTH = 255


@runtime_checkable
class DenyList(Protocol):
    """Answers whether a token id has been revoked."""

    def is_revoked(self, jti: str) -> bool:
        """``True`` when the token with this ``jti`` must be refused."""
        ...


@runtime_checkable
class DenyListStore(DenyList, Protocol):
    """A :class:`DenyList` the issuer can add to."""

    def revoke(self, jti: str, *, expires_at: float | None, now: float | None = None) -> None:
        """Refuse ``jti`` until ``expires_at`` (seconds since the epoch; ``None``: for
        ever). Nothing is stored when ``expires_at`` is not after ``now``. Revoking again
        keeps the later expiry."""
        ...


def check_jti(jti: object) -> str:
    """``jti`` if it is a non-empty string of at most :data:`MAX_JTI_LENGTH` characters.

    :raises ValueError: it is not.
    """
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise ValueError(f"jti must be a non-empty string of at most {MAX_JTI_LENGTH} characters")
    return jti


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two expiries, ``None`` meaning never."""
    return None if a is None or b is None else max(a, b)


class MemoryDenyList:
    """A :class:`DenyList` in one process's memory (tests, single-process apps).

    ``revoke(jti, expires_at=exp)`` keeps the id until the token would have expired
    anyway; :meth:`prune` (``now=`` in seconds since the epoch) forgets ids past that.
    """

    def __init__(self, revoked: dict[str, float | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float | None] = dict(revoked or {})
        self._expiry: list[tuple[float, str]] = [
            (t, j) for j, t in self._until.items() if t is not None
        ]
        heapq.heapify(self._expiry)

    def revoke(
        self, jti: str, *, expires_at: float | None = None, now: float | None = None
    ) -> None:
        """Refuse the token ``jti`` until ``expires_at`` (``None``: for ever); nothing is
        stored when ``expires_at`` is not after ``now`` (default: the current time).

        :raises ValueError: ``jti`` is not a non-empty string of at most 255 characters.
        """
        check_jti(jti)
        if expires_at is not None:
            expires_at = float(expires_at)
            if expires_at <= (time.time() if now is None else now):
                return
        with self._lock:
            until = _later(self._until[jti], expires_at) if jti in self._until else expires_at
            self._until[jti] = until
            if until is not None:
                heapq.heappush(self._expiry, (until, jti))

    def is_revoked(self, jti: str) -> bool:
        """``True`` when ``jti`` was revoked (and not yet pruned)."""
        return jti in self._until

    def prune(self, *, now: float) -> int:
        """Forget revocations whose ``expires_at`` is not after ``now``; return how many."""
        removed = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                t, jti = heapq.heappop(self._expiry)
                if self._until.get(jti) == t:  # not re-revoked with a later expiry since
                    del self._until[jti]
                    removed += 1
        return removed

    def __len__(self) -> int:
        return len(self._until)
