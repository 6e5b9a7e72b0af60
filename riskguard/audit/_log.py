"""``AuditLog``: record events, batch them per request, checkpoint, prove, verify, export,
archive."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from riskguard.audit._canonical import canonical_json, format_ts, parse_ts
from riskguard.audit._checkpoint import (
    Checkpoint,
    KeyHistory,
    SignedCheckpoint,
    TrustedKey,
)
from riskguard.audit._event import AuditEvent, DetailsEncoder, PendingEvent, build_event
from riskguard.audit._export import ExportHeader, write_export
from riskguard.audit._merkle import (
    ConsistencyProof,
    InclusionProof,
    consistency_proof,
    inclusion_proof,
    mth,
)
from riskguard.audit._offline import verify_export
from riskguard.audit._store import AuditStore, Head, SearchFilter
from riskguard.audit._verify import ChainVerifier, VerifyReport, run_rows
from riskguard.context import Principal
from riskguard.errors import AuditError, ConfigError
from riskguard.types import Outcome, ResourceRef

__all__ = ["AuditLog"]

_log = logger.bind(component="audit")


class _Batch(list[PendingEvent]):
    """The events queued by one :meth:`AuditLog.batch` block."""

    poisoned = False


class AuditLog:
    """The tamper-evident audit log.

    :param store: where events live (:class:`~riskguard.audit.SqlStore` or
        :class:`~riskguard.audit.MemoryStore`).
    :param keys: checkpoint signing keys (with their history); ``None`` records events
        without checkpoints.
    :param checkpoint_every_events: sign a checkpoint after this many new events (0: never
        automatically).
    :param checkpoint_every_seconds: …or when the last one is this old (0: never).
    :param witness_path: a file every checkpoint is also appended to (an auditor's copy).
    :param encoder: turns ``details`` into what is stored (see :class:`DetailsEncoder`).
    :param max_details_bytes: cap on the encoded details of one event.
    :param min_retention_days: events younger than this are never pruned.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        keys: KeyHistory | None = None,
        checkpoint_every_events: int = 1000,
        checkpoint_every_seconds: int = 3600,
        witness_path: Path | None = None,
        encoder: DetailsEncoder | None = None,
        max_details_bytes: int = 8192,
        min_retention_days: int = 183,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.every_events = checkpoint_every_events
        self.every_seconds = checkpoint_every_seconds
        self.witness_path = witness_path
        self.encoder = encoder
        self.max_details_bytes = max_details_bytes
        self.min_retention_days = min_retention_days
        self._clock = clock or (lambda: datetime.now(UTC))
        self._batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
            f"riskguard_audit_batch_{id(self)}", default=None
        )

    @property
    def log_id(self) -> str:
        """The log's name (the checkpoints' origin line)."""
        return self.store.log_id

    # -- recording ----------------------------------------------------------------------

    def event(
        self,
        action: str,
        outcome: Outcome,
        *,
        resource: ResourceRef | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: Principal | None = None,
        subject: str | None = None,
    ) -> PendingEvent:
        """Validate and encode an event without appending it (for :meth:`append`).

        :raises AuditError: the event is malformed (see :func:`build_event`).
        """
        return build_event(
            action,
            outcome,
            resource=resource,
            reason=reason,
            details=details,
            actor=actor,
            subject=subject,
            encoder=self.encoder,
            max_details_bytes=self.max_details_bytes,
            now=self._clock(),
        )

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
    ) -> AuditEvent | PendingEvent:
        """Record one event. Actor and request come from :mod:`riskguard.context` unless
        given. Inside :meth:`batch` the event is queued and the pending event returned;
        otherwise it is appended (committed) before this returns.

        :raises AuditError: the event is malformed; nothing is appended.
        :raises StorageError: the store failed; nothing is appended.
        """
        queue = self._batch.get()
        try:
            pending = self.event(
                action, outcome, resource=resource, reason=reason, details=details,
                actor=actor, subject=subject,
            )  # fmt: skip
        except AuditError:
            if queue is not None:
                queue.poisoned = True  # the batch lands whole or not at all
            raise
        if queue is not None:
            queue.append(pending)
            return pending
        return self.append([pending])[0]

    def append(self, pending: Sequence[PendingEvent]) -> list[AuditEvent]:
        """Append events as one batch: all or none, consecutive ``seq``.

        :raises StorageError: the store failed; nothing is appended.
        """
        if not pending:
            return []
        events, head = self.store.append(pending)
        self._maybe_checkpoint(head)
        return events

    @contextmanager
    def batch(self) -> Iterator[list[PendingEvent]]:
        """Queue every :meth:`record` in the block (in this context) and append them as one
        batch when it ends, also when it ends with an exception (the events of a failed
        request matter). A batch lands whole or not at all: if any of its events was
        refused (:class:`AuditError`), none is appended. Nested blocks join the outer
        batch."""
        outer = self._batch.get()
        if outer is not None:
            yield outer
            return
        queue = _Batch()
        token = self._batch.set(queue)
        try:
            yield queue
        finally:
            self._batch.reset(token)
            if queue.poisoned:
                _log.warning("audit batch of {} events dropped: one was refused", len(queue))
            else:
                self.append(queue)

    # -- checkpoints --------------------------------------------------------------------

    def _make(self, head: Head) -> SignedCheckpoint:
        assert self.keys is not None
        now = self._clock()
        cp = Checkpoint(self.log_id, head.seq, head.frontier.root(), head.hash, now)
        return cp.sign(self.keys.signers_at(now))

    def _maybe_checkpoint(self, head: Head) -> None:
        if self.keys is None:
            return
        due = self.every_events and head.seq - head.checkpoint_size >= self.every_events
        if not due and self.every_seconds and head.seq > head.checkpoint_size:
            last = head.checkpoint_at
            due = last is None or self._clock() - parse_ts(last) >= timedelta(
                seconds=self.every_seconds
            )
        if due:
            self._checkpoint(force=False)

    def checkpoint(self) -> SignedCheckpoint:
        """Sign a checkpoint of the log as it is now (or return the one at this size).

        :raises ConfigError: no signing key is configured or valid now.
        """
        if self.keys is None or not self.keys.signers_at(self._clock()):
            raise ConfigError(
                "no audit signing key is valid now",
                key="audit.signing_key",
                hint="create one with `riskguard audit keygen`",
            )
        signed = self._checkpoint(force=True)
        assert signed is not None
        return signed

    def _checkpoint(self, force: bool) -> SignedCheckpoint | None:
        signed = self.store.checkpoint(self._make, force=force)
        if signed is not None:
            if self.witness_path is not None:
                self._witness(signed)
            _log.debug("checkpoint at size {}", signed.checkpoint.tree_size)
        return signed

    def _witness(self, signed: SignedCheckpoint) -> None:
        line = (canonical_json({"checkpoint": signed.note}) + "\n").encode("utf-8")
        assert self.witness_path is not None
        self.witness_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.witness_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: lines never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def checkpoints(self) -> list[SignedCheckpoint]:
        """Every stored checkpoint, by tree size."""
        return self.store.checkpoints()

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The checkpoint with the largest tree size, or ``None``."""
        cps = self.store.checkpoints()
        return cps[-1] if cps else None

    # -- proofs -------------------------------------------------------------------------

    def prove(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """An inclusion proof for event ``seq`` in the tree of a checkpoint (by default the
        latest one that covers it). Verify it against that checkpoint's *signed* root.

        :raises AuditError: the event or the checkpoint does not exist.
        """
        size = self._covering_size(seq) if tree_size is None else tree_size
        if not 1 <= seq <= size:
            raise AuditError(f"seq {seq} is not within a tree of size {size}")
        ev = next(iter(self.store.events(after=seq - 1, until=seq)), None)
        if ev is None:
            raise AuditError(f"seq {seq} is not in the log (pruned or never written)")
        path = inclusion_proof(seq - 1, size, self.store.perfect)
        return InclusionProof(seq, size, bytes.fromhex(ev.hash), tuple(path))

    def prove_consistency(self, first: int, second: int) -> ConsistencyProof:
        """A consistency proof between tree sizes ``first`` and ``second``.

        :raises AuditError: the sizes are not ``0 <= first <= second <= head``.
        """
        if not 0 <= first <= second <= self.store.head().seq:
            raise AuditError(f"no consistency proof from size {first} to size {second}")
        return ConsistencyProof(
            first, second, tuple(consistency_proof(first, second, self.store.perfect))
        )

    def root(self, size: int) -> bytes:
        """The Merkle root of the first ``size`` events (unsigned: for tests and tools)."""
        return mth(0, size, self.store.perfect)

    def _covering_size(self, seq: int) -> int:
        cps = self.store.checkpoints()
        if cps and cps[-1].checkpoint.tree_size >= seq:
            return cps[-1].checkpoint.tree_size
        raise AuditError(
            f"no checkpoint covers seq {seq} yet",
            hint="make one with `riskguard audit checkpoint`",
        )

    # -- reading ------------------------------------------------------------------------

    def search(
        self, flt: SearchFilter | None = None, *, limit: int = 100, newest_first: bool = True
    ) -> list[AuditEvent]:
        """Events matching ``flt`` (newest first by default)."""
        return self.store.search(flt or SearchFilter(), limit, newest_first)

    def tail(self, n: int = 20) -> list[AuditEvent]:
        """The last ``n`` events, oldest first."""
        return list(reversed(self.store.search(SearchFilter(), n, True)))

    def head(self) -> Head:
        """The chain state at the end of the log."""
        return self.store.head()

    # -- verification -------------------------------------------------------------------

    def trusted_keys(self) -> list[TrustedKey] | None:
        """The keys this log's checkpoints verify under (``None`` without keys)."""
        return list(self.keys.trusted) if self.keys is not None else None

    def verify(
        self,
        *,
        trusted: Sequence[TrustedKey] | None = None,
        external: Sequence[tuple[str, str]] = (),
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Verify the whole log: every event hash, the chain, the Merkle root at every
        checkpoint, every checkpoint signature, and the external checkpoints given (an
        auditor's witness copy, ``(source, note)`` pairs). Streams; memory stays flat.

        Returns a report; call :meth:`VerifyReport.raise_for_damage` to raise
        :class:`~riskguard.errors.IntegrityError` instead.
        """
        head = self.store.head()
        keys = trusted if trusted is not None else self.trusted_keys()
        notes: list[tuple[str, str]] = [
            (f"stored checkpoint #{i}", note)
            for i, note in enumerate(self.store.checkpoint_notes(), 1)
        ]
        notes += list(external)
        if self.witness_path is not None and self.witness_path.is_file():
            notes += read_witness(self.witness_path)
        v = ChainVerifier(
            self.log_id,
            keys,
            notes,
            start_seq=head.pruned_through,
            start_hash=head.anchor_hash,
            start_frontier=head.anchor_frontier,
            progress=progress,
        )
        return run_rows(self.store.rows(head.pruned_through), v)

    # -- export and archive -------------------------------------------------------------

    def export(self, out: Path, *, until: int | None = None) -> int:
        """Write the log (events ``after pruned..until`` and its checkpoints) to ``out``
        atomically; return the number of events written.

        :raises OSError: the file cannot be written.
        """
        head = self.store.head()
        end = head.seq if until is None else min(until, head.seq)
        notes = [cp.note for cp in self.store.checkpoints() if cp.checkpoint.tree_size <= end]
        header = ExportHeader(
            log_id=self.log_id,
            events=end - head.pruned_through,
            after_seq=head.pruned_through,
            anchor_hash=head.anchor_hash,
            anchor_frontier=head.anchor_frontier.to_text(),
        )
        return write_export(out, header, notes, self.store.events(head.pruned_through, end))

    def archive(self, out: Path, *, older_than_days: int | None = None) -> AuditEvent | None:
        """Move the oldest events out of the database (Cybersecurity Law art. 21 keeps network
        logs at least six months): export events ``1..m`` to ``out``, check that export, then
        prune them. ``m`` is the largest checkpointed size whose events are all older than
        ``older_than_days`` (at least ``min_retention_days``). An ``audit.prune`` record
        naming ``m`` and the export's SHA-256 is appended in the same transaction; verification
        of the remaining log starts from the anchor at ``m``.

        Returns that record, or ``None`` when nothing is old enough.

        :raises AuditError: the days are under the retention minimum, or the export does not
            verify.
        """
        days = self.min_retention_days if older_than_days is None else older_than_days
        if days < self.min_retention_days:
            raise AuditError(
                f"audit events must be kept at least {self.min_retention_days} days",
                hint="Cybersecurity Law art. 21: network logs are kept at least six months",
            )
        cutoff = format_ts(self._clock() - timedelta(days=days))
        head = self.store.head()
        young = self.store.search(SearchFilter(since=cutoff), limit=1, newest_first=False)
        limit = (young[0].seq - 1) if young else head.seq
        # After an earlier prune, a segment must reach that prune's record: verifying the
        # remaining log from the anchor needs the record (see ChainVerifier.finish).
        floor = head.pruned_through
        if floor:
            recs = self.store.search(
                SearchFilter(action="audit.prune", resource_id=str(floor)), limit=1
            )
            floor = recs[0].seq if recs else head.seq
        sizes = [c.checkpoint.tree_size for c in self.store.checkpoints()]
        m = max((s for s in sizes if floor <= s <= limit and s > head.pruned_through), default=0)
        if m == 0:
            return None
        self.export(out, until=m)
        report = verify_export(out, self.trusted_keys())
        if not report.ok:
            out.unlink(missing_ok=True)
            raise AuditError(f"the archive did not verify, nothing was pruned: {report.detail}")
        digest = _sha256_file(out)
        pending = self.event(
            "audit.prune",
            "success",
            resource=ResourceRef("audit.log", str(m)),
            details={"through_seq": m, "archive_sha256": digest, "archive": out.name},
        )
        rec = self.store.prune(m, pending)
        # A checkpoint after the prune record binds the anchor at m: without one, a
        # verifier could not tell this prune from events deleted by hand.
        if self.keys is not None and self.keys.signers_at(self._clock()):
            self._checkpoint(force=True)
        return rec


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_witness(path: Path) -> list[tuple[str, str]]:
    """The checkpoints in a witness file, as ``(source, note)`` pairs. A line that does not
    parse is passed on as its raw text, so the verifier reports it as ``malformed``."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                note = json.loads(line)["checkpoint"]
                if not isinstance(note, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                note = line
            out.append((f"{path.name} line {n}", note))
    return out
