"""Where the log lives: the :class:`AuditStore` Protocol, the chain state it guards, and the
in-memory store (the test double and the store for short-lived tools).

A store serialises appends on its *head*: the last ``seq``, the chain head hash and the
Merkle frontier, read and written in the same transaction as the events, so that writers in
many threads and processes produce one chain with gap-free ``seq``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from riskguard.audit._canonical import GENESIS_HASH, format_ts
from riskguard.audit._checkpoint import SignedCheckpoint, parse_checkpoint
from riskguard.audit._event import AuditEvent, PendingEvent
from riskguard.audit._merkle import Frontier, leaf_hash, node_hash
from riskguard.audit._verify import Row
from riskguard.errors import AuditError, StorageError

__all__ = [
    "STORED_LEVEL",
    "AuditStore",
    "Head",
    "MemoryStore",
    "SearchFilter",
    "check_prune",
    "event_row",
    "extend_chain",
    "frontier_at",
    "subtree_from_leaves",
]

# Perfect subtrees of 2**8 leaves and up are stored as they complete (about one row per 128
# events); smaller ones are recomputed from at most 256 event hashes when a proof needs them.
STORED_LEVEL = 8

Node = tuple[int, int, bytes]


@dataclass(frozen=True)
class Head:
    """The chain state at the end of the log."""

    seq: int = 0
    hash: str = GENESIS_HASH
    frontier: Frontier = field(default_factory=Frontier)
    checkpoint_size: int = 0
    checkpoint_at: str | None = None
    pruned_through: int = 0
    anchor_hash: str = GENESIS_HASH
    anchor_frontier: Frontier = field(default_factory=Frontier)


@dataclass(frozen=True)
class SearchFilter:
    """What ``search`` matches; every given field must match. Times are canonical
    RFC 3339 strings (``since`` inclusive, ``until`` exclusive)."""

    action: str | None = None
    outcome: str | None = None
    actor: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    since: str | None = None
    until: str | None = None

    def matches(self, ev: AuditEvent) -> bool:
        """Whether ``ev`` passes the filter (``action`` may end in ``.*``)."""
        if self.action is not None:
            if self.action.endswith(".*"):
                if not ev.action.startswith(self.action[:-1]):
                    return False
            elif ev.action != self.action:
                return False
        actor_id = ev.actor["id"] if ev.actor else None
        rtype = ev.resource["type"] if ev.resource else None
        rid = ev.resource["id"] if ev.resource else None
        return (
            (self.outcome is None or ev.outcome == self.outcome)
            and (self.actor is None or actor_id == self.actor)
            and (self.resource_type is None or rtype == self.resource_type)
            and (self.resource_id is None or rid == self.resource_id)
            and (self.request_id is None or ev.request_id == self.request_id)
            and (self.since is None or ev.ts >= self.since)
            and (self.until is None or ev.ts < self.until)
        )


class AuditStore(Protocol):
    """Storage for one audit log. Memory and SQL implementations pass the same tests."""

    log_id: str

    def append(self, pending: Sequence[PendingEvent]) -> tuple[list[AuditEvent], Head]:
        """Append ``pending`` whole (all or none) at the end of the chain; return the sealed
        events and the new head."""
        ...

    def head(self) -> Head:
        """The current head."""
        ...

    def events(self, after: int = 0, until: int | None = None) -> Iterator[AuditEvent]:
        """Events with ``after < seq <= until`` in ``seq`` order, streamed."""
        ...

    def perfect(self, level: int, index: int) -> bytes:
        """The hash of a complete perfect subtree (see :mod:`riskguard.audit._merkle`)."""
        ...

    def checkpoint(
        self, make: Callable[[Head], SignedCheckpoint], *, force: bool = True
    ) -> SignedCheckpoint | None:
        """Under the head lock, sign the current head with ``make`` and store it; with
        ``force=False`` return ``None`` when the last checkpoint already covers the head."""
        ...

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, by tree size."""
        ...

    def checkpoint_notes(self) -> list[str]:
        """Every stored checkpoint's note text, unparsed (the verifier parses them)."""
        ...

    def rows(self, after: int = 0) -> Iterator[Row]:
        """Events after ``after`` as verification rows, exactly as stored, in seq order."""
        ...

    def search(
        self, flt: SearchFilter, limit: int = 100, newest_first: bool = True
    ) -> list[AuditEvent]:
        """Events matching ``flt``."""
        ...

    def prune(self, through: int, pending: PendingEvent) -> AuditEvent:
        """Delete events ``1..through`` (keeping the anchor that later verification starts
        from) and append ``pending`` (the ``audit.prune`` record), in one transaction."""
        ...


def extend_chain(
    head: Head, pending: Sequence[PendingEvent]
) -> tuple[list[AuditEvent], list[Node], Head]:
    """Seal ``pending`` after ``head``: the events, the stored-level subtrees they complete,
    and the new head."""
    frontier = head.frontier.copy()
    prev, seq = head.hash, head.seq
    events: list[AuditEvent] = []
    nodes: list[Node] = []
    for p in pending:
        seq += 1
        ev = AuditEvent.seal(p, seq, prev)
        prev = ev.hash
        for level, index, h in frontier.append(leaf_hash(bytes.fromhex(ev.hash))):
            if level >= STORED_LEVEL:
                nodes.append((level, index, h))
        events.append(ev)
    return events, nodes, replace(head, seq=seq, hash=prev, frontier=frontier)


def frontier_at(size: int, perfect: Callable[[int, int], bytes]) -> Frontier:
    """The frontier of the tree of ``size`` leaves, from perfect-subtree hashes."""
    hashes = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            hashes.append(perfect(level, start >> level))
            start += 1 << level
    return Frontier(size, hashes)


def subtree_from_leaves(level: int, index: int, leaves: Sequence[str]) -> bytes:
    """A perfect subtree's hash from its event hashes (hex).

    :raises StorageError: some of its events are missing.
    """
    if len(leaves) != 1 << level:
        raise StorageError(
            f"cannot build Merkle subtree ({level}, {index}): "
            f"{(1 << level) - len(leaves)} of its events are missing",
            hint="the log was pruned or damaged; run `riskguard audit verify`",
        )
    hashes = [leaf_hash(bytes.fromhex(h)) for h in leaves]
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


class MemoryStore:
    """An :class:`AuditStore` in process memory (a lock serialises appends)."""

    def __init__(self, log_id: str = "riskguard/audit") -> None:
        self.log_id = log_id
        self._lock = threading.Lock()
        self._events: dict[int, AuditEvent] = {}
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._checkpoints: dict[int, SignedCheckpoint] = {}
        self._head = Head()

    def append(self, pending: Sequence[PendingEvent]) -> tuple[list[AuditEvent], Head]:
        with self._lock:
            events, nodes, head = extend_chain(self._head, pending)
            for ev in events:
                self._events[ev.seq] = ev
            for level, index, h in nodes:
                self._nodes[(level, index)] = h
            self._head = head
            return events, head

    def head(self) -> Head:
        return self._head

    def events(self, after: int = 0, until: int | None = None) -> Iterator[AuditEvent]:
        end = self._head.seq if until is None else min(until, self._head.seq)
        for seq in sorted(s for s in list(self._events) if after < s <= end):
            yield self._events[seq]

    def perfect(self, level: int, index: int) -> bytes:
        if (level, index) in self._nodes:
            return self._nodes[(level, index)]
        if level >= STORED_LEVEL:
            raise StorageError(f"Merkle node ({level}, {index}) is not stored")
        lo = index << level
        leaves = [self._events[s].hash for s in range(lo + 1, lo + (1 << level) + 1)
                  if s in self._events]  # fmt: skip
        if len(leaves) < 1 << level and level > 0:
            # It straddles a prune: its pruned half is an anchor node (see prune()).
            return node_hash(self.perfect(level - 1, 2 * index),
                             self.perfect(level - 1, 2 * index + 1))  # fmt: skip
        return subtree_from_leaves(level, index, leaves)

    def checkpoint(
        self, make: Callable[[Head], SignedCheckpoint], *, force: bool = True
    ) -> SignedCheckpoint | None:
        with self._lock:
            head = self._head
            if head.seq in self._checkpoints:
                return self._checkpoints[head.seq] if force else None
            if not force and head.checkpoint_size >= head.seq:
                return None
            signed = make(head)
            self._checkpoints[head.seq] = signed
            self._head = replace(
                head, checkpoint_size=head.seq, checkpoint_at=format_ts(signed.checkpoint.time)
            )
            return signed

    def checkpoints(self) -> list[SignedCheckpoint]:
        return [parse_checkpoint(n) for n in self.checkpoint_notes()]

    def checkpoint_notes(self) -> list[str]:
        return [self._checkpoints[k].note for k in sorted(self._checkpoints)]

    def rows(self, after: int = 0) -> Iterator[Row]:
        for ev in self.events(after=after):
            yield event_row(ev, f"seq {ev.seq}")

    def search(
        self, flt: SearchFilter, limit: int = 100, newest_first: bool = True
    ) -> list[AuditEvent]:
        seqs = sorted(self._events, reverse=newest_first)
        out = []
        for s in seqs:
            if flt.matches(self._events[s]):
                out.append(self._events[s])
                if len(out) >= limit:
                    break
        return out

    def prune(self, through: int, pending: PendingEvent) -> AuditEvent:
        with self._lock:
            head = self._head
            check_prune(head, through)
            anchor = frontier_at(through, self.perfect)
            for level, index, h in anchor.nodes():
                self._nodes[(level, index)] = h
            anchor_hash = self._events[through].hash
            for s in range(head.pruned_through + 1, through + 1):
                self._events.pop(s, None)
            head = replace(
                head, pruned_through=through, anchor_hash=anchor_hash, anchor_frontier=anchor
            )
            events, nodes, head = extend_chain(head, [pending])
            self._events[events[0].seq] = events[0]
            for level, index, h in nodes:
                self._nodes[(level, index)] = h
            self._head = head
            return events[0]


def event_row(ev: AuditEvent, where: str) -> Row:
    """A verification row for a stored event."""
    prune_of = None
    rid = ev.resource.get("id") if ev.resource else None
    if ev.action == "audit.prune" and isinstance(rid, str) and rid.isdigit():
        prune_of = int(rid)
    return Row(ev.seq, ev.prev_hash, ev.hash, ev.compute_hash, where, None, prune_of)


def check_prune(head: Head, through: int) -> None:
    """Refuse a prune that is already done or that no checkpoint covers.

    :raises AuditError: the prune is not allowed.
    """
    if through <= head.pruned_through:
        raise AuditError(f"events up to seq {head.pruned_through} are already pruned")
    if through > head.checkpoint_size:
        raise AuditError(
            f"no checkpoint covers seq {through} (the last is at {head.checkpoint_size})",
            hint="make a checkpoint first (`riskguard audit checkpoint`)",
        )
