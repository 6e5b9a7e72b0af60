"""Streaming verification: every hash, the chain, the Merkle roots, every checkpoint.

Rows come in ``seq`` order from a store or an export file. Intact rows cost one chain hash
and one Merkle leaf each; memory stays at O(log n) plus a small look-ahead window. At the
first row that does not fit, the verifier reads up to :data:`WINDOW` rows ahead and names
the damage:

=============  =================================================================
``modified``   an event's content no longer matches its hash, or an event was
               re-hashed (its successor no longer links to it), or a run of events
               was rewritten with a consistent chain (found by a signed root)
``deleted``    events are missing (a gap in ``seq`` or a renumbered successor)
``inserted``   an event that was never appended, or a replayed copy of one
``reordered``  events are present but out of order
``truncated``  the log ends before a checkpoint the verifier holds
``bad_signature``  a checkpoint's signature by a trusted key fails, or it is another
               log's checkpoint
``unknown_key``    a checkpoint is signed by no key trusted at its time
``fork``       two signed checkpoints that cannot both describe this log
``malformed``  a checkpoint or export line that does not parse
=============  =================================================================

Where several apply, the first damaged ``seq`` decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from riskguard.audit._canonical import GENESIS_HASH, canonical_json, chain_hash
from riskguard.audit._checkpoint import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    TrustedKey,
    parse_checkpoint,
)
from riskguard.audit._merkle import Frontier, leaf_hash
from riskguard.errors import IntegrityError

__all__ = [
    "KINDS",
    "WINDOW",
    "ChainVerifier",
    "Row",
    "VerifyReport",
    "classify",
    "run_rows",
]

_leaf = hashlib.sha256

KINDS = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "bad_signature",
    "unknown_key",
    "fork",
    "malformed",
)
WINDOW = 16


@dataclass
class VerifyReport:
    """The outcome of a verification (``kind`` and ``first_bad_seq`` are ``None`` when
    intact)."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    kind: str | None
    detail: str
    checkpoints: int = 0

    def to_json(self) -> dict[str, object]:
        """The CLI's ``--json`` object."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "kind": self.kind,
            "detail": self.detail,
        }

    def raise_for_damage(self) -> None:
        """:raises IntegrityError: the log is damaged."""
        if not self.ok:
            raise IntegrityError(self.detail, seq=self.first_bad_seq, kind=self.kind or "")


class Row:
    """One event as read back: its claimed ``seq``, ``prev_hash`` and ``hash``, and a way to
    re-hash its content as if it stood at some ``seq``.

    ``broken`` says why a row could not be read at all (then the other fields may be
    ``None``). ``prune_of`` is the anchor seq when the row is an ``audit.prune`` record.
    """

    __slots__ = ("_rehash", "broken", "hash", "prev_hash", "prune_of", "seq", "where")

    def __init__(
        self,
        seq: int | None,
        prev_hash: str | None,
        hash: str | None,
        rehash: Callable[[int], str | None] | None,
        where: str,
        broken: str | None = None,
        prune_of: int | None = None,
    ) -> None:
        self.seq, self.prev_hash, self.hash = seq, prev_hash, hash
        self._rehash, self.where, self.broken, self.prune_of = rehash, where, broken, prune_of

    def rehash(self, seq: int) -> str | None:
        """The content's hash as if at ``seq`` (``None`` when it cannot be computed)."""
        if self._rehash is None:
            return None
        try:
            return self._rehash(seq)
        except (ValueError, TypeError, KeyError):
            return None

    def orig_seq(self, around: int) -> int | None:
        """The seq at which the content matches its hash, searched near ``around``."""
        if self.broken or self.hash is None:
            return None
        if self.seq is not None and self.rehash(self.seq) == self.hash:
            return self.seq
        centre = self.seq if self.seq is not None else around
        for d in range(1, WINDOW + 2):
            for s in (centre + d, centre - d, around + d, around - d):
                if s > 0 and self.rehash(s) == self.hash:
                    return s
        return None


def rehash_json(prev_hash: str, canonical: str | bytes) -> Callable[[int], str]:
    """A re-hasher for content held as canonical JSON text."""

    def rehash(seq: int) -> str:
        obj = json.loads(canonical)
        if not isinstance(obj, dict) or obj.get("seq") == seq:
            text = canonical if isinstance(canonical, str) else canonical.decode("utf-8")
        else:
            obj["seq"] = seq
            text = canonical_json(obj)
        return chain_hash(prev_hash, text)

    return rehash


def classify(
    window: list[Row], e: int, prev: str, prev2: str | None, first: int
) -> tuple[int, str, str]:
    """Name the damage at expected seq ``e`` (see the module docstring)."""
    r0 = window[0]
    if r0.broken:
        return e, "modified", f"{r0.where}: {r0.broken}"
    o = [r.orig_seq(e + i) for i, r in enumerate(window)]
    o0 = o[0]
    nxt = window[1] if len(window) > 1 else None
    if o0 is None:
        if nxt is not None and o[1] == e:
            return (
                e,
                "inserted",
                f"{r0.where}: an event that the chain does not link stands at seq {e}",
            )
        return e, "modified", f"{r0.where}: the content of seq {e} does not match its hash"
    if o0 == e:
        if r0.seq != e:
            return e, "modified", f"{r0.where}: seq {e} is stored as seq {r0.seq}"
        if e == first:
            return e, "modified", f"{r0.where}: seq {e} does not link to the start of the log"
        if prev2 is not None and r0.prev_hash == prev2:
            return e - 1, "inserted", f"seq {e - 1} was inserted: seq {e} links past it"
        return (
            e - 1,
            "modified",
            f"seq {e - 1} was altered and re-hashed: seq {e} does not link to it",
        )
    if o0 > e:
        if any(x is not None and e <= x < o0 for x in o[1:]):
            return e, "reordered", f"{r0.where}: seq {o0} stands where seq {e} belongs"
        missing = f"{e}" if o0 == e + 1 else f"{e}..{o0 - 1}"
        return e, "deleted", f"{r0.where}: seq {missing} missing (next present is seq {o0})"
    if (
        o0 == e - 1
        and r0.hash != prev  # an exact copy of the row before: the copy is the damage
        and prev2 is not None
        and r0.prev_hash == prev2
        and (nxt is None or nxt.prev_hash == r0.hash)
    ):
        return e - 1, "inserted", f"seq {e - 1} was inserted before the real seq {e - 1}"
    return e, "inserted", f"{r0.where}: a copy of seq {o0} stands at seq {e}"


@dataclass
class _Issue:
    seq: int | None
    kind: str
    detail: str


@dataclass
class ChainVerifier:
    """Checks a stream of rows against the chain rules and the checkpoints.

    :param log_id: the log's origin line; checkpoints of another log are damage.
    :param trusted: keys trusted for checkpoint signatures; ``None`` skips signature
        checks (roots are still compared) and says so in the report.
    :param notes: ``(source, note text)`` of every checkpoint to check (the log's own, an
        external witness copy, ``--checkpoint`` files).
    :param start_seq: the last pruned seq (0 for a whole log); ``start_hash`` and
        ``start_frontier`` are the anchor there.
    """

    log_id: str
    trusted: Sequence[TrustedKey] | None
    notes: Sequence[tuple[str, str]] = ()
    start_seq: int = 0
    start_hash: str = GENESIS_HASH
    start_frontier: Frontier = field(default_factory=Frontier)
    progress: Callable[[int], None] | None = None
    issues: list[_Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_size: dict[int, list[tuple[str, SignedCheckpoint]]] = {}
        self.verified = 0
        for source, note in self.notes:
            self._add_note(source, note)
        self.frontier = self.start_frontier.copy()
        self.seq = self.start_seq
        self.head_digest = bytes.fromhex(self.start_hash)
        self.last_match = self.start_seq
        self.matched_max = -1
        self.mismatches: list[tuple[int, int, str]] = []
        self.before: Frontier | None = None
        # The seq of the audit.prune record that names the anchor (pruned logs only).
        self.prune_seq: int | None = None
        if self.start_seq in self.by_size:
            self._check_size()

    def _add_note(self, source: str, note: str) -> None:
        try:
            cp = parse_checkpoint(note)
        except CheckpointError as exc:
            self.issues.append(_Issue(None, "malformed", f"{source}: {exc}"))
            return
        size = cp.checkpoint.tree_size
        if cp.checkpoint.origin != self.log_id:
            self.issues.append(_Issue(size, "bad_signature",
                f"{source}: checkpoint at size {size} is for log "
                f"{cp.checkpoint.origin!r}, not {self.log_id!r}"))  # fmt: skip
            return
        if self.trusted is not None:
            try:
                cp.verify(self.trusted)
            except CheckpointError as exc:
                self.issues.append(_Issue(size, exc.kind, f"{source}: {exc}"))
                return
        self.verified += 1
        self.by_size.setdefault(size, []).append((source, cp))

    @property
    def head(self) -> str:
        """The chain head so far, as hex."""
        return self.head_digest.hex()

    def good(self, hash_hex: str) -> None:
        """Take the next intact row (its stored hash, hex)."""
        self.good_digest(bytes.fromhex(hash_hex))

    def good_digest(self, digest: bytes) -> None:
        """Take the next intact row (its stored hash, raw): the hot path."""
        seq = self.seq + 1
        if seq in self.by_size:
            self.before = self.frontier.copy()  # see _lone_leaf()
        self.frontier.add(_leaf(b"\x00" + digest).digest())
        self.seq = seq
        self.head_digest = digest
        if seq in self.by_size:
            self._check_size()
        if self.progress is not None and not seq % 10_000:
            self.progress(seq)

    def saw_prune(self, anchor: int | None, seq: int) -> None:
        """An intact ``audit.prune`` record naming ``anchor`` stands at ``seq``."""
        if anchor is not None and anchor == self.start_seq and self.prune_seq is None:
            self.prune_seq = seq

    def _check_size(self) -> None:
        root = self.frontier.root()
        good, bad, lone = [], [], []
        for source, cp in self.by_size[self.seq]:
            c = cp.checkpoint
            if c.root == root and c.head_hash == self.head:
                good.append(source)
            else:
                bad.append(source)
                lone.append(self._lone_leaf(c))
        if good:
            self.matched_max = self.seq
        if bad:
            # Where the checkpoint differs from the log in its last event alone, the damage is
            # at this seq, not anywhere after the last matching checkpoint.
            lo = self.seq if all(lone) else self.last_match + 1
            self.mismatches.append((lo, self.seq, ", ".join(bad)))
            if all(lone):
                self.last_match = self.seq - 1  # every checkpoint here vouches for 1..seq-1
        if good and not bad:
            self.last_match = self.seq

    def _lone_leaf(self, c: Checkpoint) -> bool:
        """Whether ``c`` agrees with the log's first ``seq - 1`` events (its root is theirs
        plus ``c``'s head hash as the last leaf)."""
        if self.before is None or self.before.size != self.seq - 1:
            return False
        f = self.before.copy()
        f.add(leaf_hash(bytes.fromhex(c.head_hash)))
        return f.root() == c.root

    def damage(self, seq: int, kind: str, detail: str) -> None:
        """Record the damage the row stream found (the stream stops after it)."""
        self.issues.append(_Issue(seq, kind, detail))

    def finish(self, ended_cleanly: bool) -> VerifyReport:
        """The report, once the stream has ended (``ended_cleanly``: no row damage)."""
        for lo, size, sources in self.mismatches:
            fork = self.matched_max >= size
            kind = "fork" if fork else "modified"
            what = (
                "contradicts another signed checkpoint that matches the log"
                if fork
                else "does not match the log: events were rewritten with a consistent chain"
            )
            rng = f"seq {lo}" if lo == size else f"seq {lo}..{size}"
            self.issues.append(_Issue(lo, kind, f"checkpoint at size {size} ({sources}) {what} "
                                               f"(damage within {rng})"))  # fmt: skip
        if ended_cleanly:
            beyond = [s for s in self.by_size if s > self.seq]
            if beyond:
                src = ", ".join(sorted({x for s in beyond for x, _ in self.by_size[s]}))
                self.issues.append(_Issue(self.seq + 1, "truncated",
                    f"the log ends at seq {self.seq} but a checkpoint ({src}) covers "
                    f"{max(beyond)} events"))  # fmt: skip
            # A pruned log must show the audit.prune record naming its anchor, under a signed
            # checkpoint: else anyone who can delete rows could pass deletion off as a prune.
            gone = f"events 1..{self.start_seq} are gone"
            if self.start_seq and self.prune_seq is None:
                self.issues.append(_Issue(1, "deleted", f"{gone} without an audit.prune record"))
            elif self.start_seq and self.matched_max < (self.prune_seq or 0):
                self.issues.append(_Issue(1, "deleted",
                    f"{gone} and no signed checkpoint covers the audit.prune record at seq "
                    f"{self.prune_seq}"))  # fmt: skip
        checked = self.seq - self.start_seq
        if self.issues:
            first = min(self.issues, key=lambda i: (i.seq is None, i.seq or 0))
            return VerifyReport(False, checked, first.seq, first.kind, first.detail, self.verified)
        note = f"{checked} events and {self.verified} checkpoints verified"
        if self.trusted is None:
            note += " (signatures not checked: no trusted key given)"
        elif self.verified == 0:
            note += " (no checkpoints: only the hash chain was checked)"
        return VerifyReport(True, checked, None, None, note, self.verified)


def run_rows(rows: Iterator[Row], v: ChainVerifier) -> VerifyReport:
    """Feed ``rows`` to ``v``; stop at the first damaged row; return the report."""
    e = v.start_seq + 1
    first = e
    prev, prev2 = v.start_hash, None
    for row in rows:
        if (
            row.broken is None
            and row.seq == e
            and row.prev_hash == prev
            and row.rehash(e) == row.hash
        ):
            assert row.hash is not None
            v.good(row.hash)
            if row.prune_of is not None:
                v.saw_prune(row.prune_of, e)
            prev2, prev = prev, row.hash
            e += 1
            continue
        window = [row, *islice(rows, WINDOW)]
        seq, kind, detail = classify(window, e, prev, prev2, first)
        v.damage(seq, kind, detail)
        return v.finish(ended_cleanly=False)
    return v.finish(ended_cleanly=True)
