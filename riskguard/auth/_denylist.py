"""The deny-list plug point: revoked token ids (``jti``).

:class:`DenyList` is the Protocol the verifier asks (one verb); :class:`MemoryDenyList`
is the in-memory double. SQL and Redis stores implement the same Protocol so that several
processes share one list. A store that fails raises (``StorageError``): the verifier lets
that propagate, so an unreachable deny-list rejects requests instead of waving revoked
tokens through.
"""

from __future__ import annotations

import heapq
import threading
from typing import Protocol, runtime_checkable

__all__ = ["DenyList", "MemoryDenyList"]


@runtime_checkable
class DenyList(Protocol):
    """Answers whether a token id has been revoked."""

    def is_revoked(self, jti: str) -> bool:
        """``True`` when the token with this ``jti`` must be refused."""
        ...


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

    def revoke(self, jti: str, *, expires_at: float | None = None) -> None:
        """Refuse the token ``jti`` from now on (until ``expires_at``, if given).

        :raises ValueError: ``jti`` is not a non-empty string.
        """
        if not isinstance(jti, str) or not jti:
            raise ValueError("jti must be a non-empty string")
        with self._lock:
            self._until[jti] = expires_at
            if expires_at is not None:
                heapq.heappush(self._expiry, (expires_at, jti))

    def is_revoked(self, jti: str) -> bool:
        """``True`` when ``jti`` was revoked (and not yet pruned)."""
        return jti in self._until

    def prune(self, *, now: float) -> int:
        """Forget revocations whose token expired before ``now``; return how many."""
        removed = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                t, jti = heapq.heappop(self._expiry)
                if self._until.get(jti) == t:  # not re-revoked with a later expiry since
                    del self._until[jti]
                    removed += 1
        return removed

    def __len__(self) -> int:
        return len(self._until)
