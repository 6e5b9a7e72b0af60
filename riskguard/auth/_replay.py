"""The DPoP replay plug point: proof ids (``jti``) already seen within their window.

RFC 9449 §11.1: a resource server should refuse a proof whose ``jti`` it has seen while
the proof would still be fresh. :class:`ReplayCache` is the Protocol (one verb),
:class:`MemoryReplayCache` the in-memory implementation every verifier gets by default.
Several processes behind one load balancer need a shared cache (Redis) to catch a proof
replayed against another process.
"""

from __future__ import annotations

import heapq
import threading
from typing import Protocol, runtime_checkable

__all__ = ["MemoryReplayCache", "ReplayCache"]


@runtime_checkable
class ReplayCache(Protocol):
    """Remembers one-time ids until they expire."""

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; ``False`` when it was already there."""
        ...


class MemoryReplayCache:
    """A :class:`ReplayCache` in one process's memory; expired ids are dropped as new
    ones arrive, so memory follows the rate of proofs times the freshness window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; ``False`` when it was already there."""
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                t, old = heapq.heappop(self._expiry)
                if self._until.get(old) == t:
                    del self._until[old]
            if key in self._until:
                return False
            self._until[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))
            return True

    def __len__(self) -> int:
        return len(self._until)
