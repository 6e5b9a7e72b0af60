"""The export file: a log that verifies offline with nothing but a public key.

JSON Lines, every line canonical JSON (sorted keys, no spaces) ending in ``\\n``:

1. a header ``{"export":{"after_seq":…,"anchor_frontier":…,"anchor_hash":…,"events":N,
   "format":"riskguard-audit-export","log_id":…,"version":1}}``;
2. one ``{"checkpoint":"<signed note>"}`` line per checkpoint;
3. one ``{"event":<canonical event>,"hash":"<hex>"}`` line per event, in ``seq`` order.

Because the event object on a line *is* the canonical text the hash covers, verification
hashes the line's bytes directly instead of re-encoding them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, TypeVar

from riskguard.audit._canonical import GENESIS_HASH, canonical_json
from riskguard.audit._event import AuditEvent
from riskguard.audit._merkle import Frontier
from riskguard.audit._verify import (
    WINDOW,
    ChainVerifier,
    Row,
    VerifyReport,
    classify,
    rehash_json,
)

__all__ = ["ExportHeader", "ExportReader", "write_export"]

_T = TypeVar("_T")

FORMAT = "riskguard-audit-export"
VERSION = 1
_EV_PREFIX = b'{"event":{"action":'
_HASH_KEY = b',"hash":"'
# An event line ends in `,"hash":"<64 hex>"}` and a newline: _TAIL bytes, the hash at
# [-_HASH_AT:-3].
_TAIL = len(_HASH_KEY) + 64 + len(b'"}\n')
_HASH_AT = _TAIL - len(_HASH_KEY)
_PRUNE_PREFIX = b'{"action":"audit.prune",'
_HEX = frozenset(b"0123456789abcdef")


@dataclass(frozen=True)
class ExportHeader:
    """The first line of an export."""

    log_id: str
    events: int
    after_seq: int = 0
    anchor_hash: str = GENESIS_HASH
    anchor_frontier: str = "0:"

    def line(self) -> str:
        """The header line (without newline)."""
        return canonical_json({"export": {
            "format": FORMAT, "version": VERSION, "log_id": self.log_id, "events": self.events,
            "after_seq": self.after_seq, "anchor_hash": self.anchor_hash,
            "anchor_frontier": self.anchor_frontier,
        }})  # fmt: skip


def write_export(
    out: Path,
    header: ExportHeader,
    notes: Iterable[str],
    events: Iterable[AuditEvent],
) -> int:
    """Write an export atomically (a temp file renamed into place); return events written.

    :raises OSError: the file cannot be written (nothing is left half-written).
    """
    tmp = out.with_name(out.name + ".part")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(header.line() + "\n")
        for note in notes:
            f.write(canonical_json({"checkpoint": note}) + "\n")
        for ev in events:
            f.write(ev.export_line() + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    if n != header.events:
        tmp.unlink()
        raise OSError(f"expected {header.events} events but read {n}; nothing was written")
    tmp.replace(out)
    return n


class ExportFormatError(ValueError):
    """The export's header or checkpoint block is malformed (line number in the message)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def _canonical_obj(raw: bytes, lineno: int) -> dict[str, object]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportFormatError(lineno, f"not JSON ({exc})") from None
    if not isinstance(obj, dict) or canonical_json(obj).encode("utf-8") != raw:
        raise ExportFormatError(lineno, "not a canonical JSON object")
    return obj


class ExportReader:
    """Reads an export file: the header and checkpoints first, then event rows lazily.

    :raises ExportFormatError: the header or a checkpoint line is malformed.
    :raises OSError: the file cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in rows()/close()
        self.lineno = 0
        self.notes: list[tuple[str, str]] = []
        self._pending: bytes | None = None
        self.rows_read = 0
        try:
            self.header = self._read_header()
            self._read_checkpoints()
        except BaseException:
            self._f.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def _next_line(self) -> bytes | None:
        raw = self._f.readline()
        if not raw:
            return None
        self.lineno += 1
        return raw

    def _read_header(self) -> ExportHeader:
        raw = self._next_line()
        if raw is None or not raw.endswith(b"\n"):
            raise ExportFormatError(1, "the file is empty or has no complete header line")
        obj = _canonical_obj(raw[:-1], 1)
        h = obj.get("export")
        keys = {"format", "version", "log_id", "events", "after_seq", "anchor_hash",
                "anchor_frontier"}  # fmt: skip
        if set(obj) != {"export"} or not isinstance(h, dict) or set(h) != keys:
            raise ExportFormatError(1, "not a riskguard audit export header")
        if h["format"] != FORMAT or h["version"] != VERSION:
            raise ExportFormatError(1, f"unsupported export format {h['format']!r} v{h['version']}")
        try:
            header = ExportHeader(
                log_id=_typed(h["log_id"], str),
                events=_typed(h["events"], int),
                after_seq=_typed(h["after_seq"], int),
                anchor_hash=_typed(h["anchor_hash"], str),
                anchor_frontier=_typed(h["anchor_frontier"], str),
            )
            frontier = Frontier.from_text(header.anchor_frontier)
        except (TypeError, ValueError) as exc:
            raise ExportFormatError(1, f"bad header field: {exc}") from None
        if frontier.size != header.after_seq or (
            header.after_seq == 0 and header.anchor_hash != GENESIS_HASH
        ):
            raise ExportFormatError(1, "the header's anchor does not match after_seq")
        if len(header.anchor_hash) != 64 or not set(header.anchor_hash.encode()) <= _HEX:
            raise ExportFormatError(1, "the header's anchor hash is malformed")
        self.frontier = frontier
        return header

    def _read_checkpoints(self) -> None:
        while True:
            raw = self._next_line()
            if raw is None:
                return
            if not raw.startswith(b'{"checkpoint":'):
                self._pending = raw
                return
            if not raw.endswith(b"\n"):
                raise ExportFormatError(self.lineno, "the line is not terminated")
            obj = _canonical_obj(raw[:-1], self.lineno)
            note = obj.get("checkpoint")
            if set(obj) != {"checkpoint"} or not isinstance(note, str):
                raise ExportFormatError(self.lineno, "malformed checkpoint line")
            self.notes.append((f"export line {self.lineno}", note))

    def verify_into(self, v: ChainVerifier) -> VerifyReport:
        """Feed the event lines to ``v`` and return its report: what :func:`run_rows` does
        for the database, without building a row per intact line. An intact line costs one
        chain hash over its own bytes and a few slices; the first line that does not fit
        goes, with the lines after it, to the same classifier as the database path."""
        e = v.start_seq + 1
        first = e
        prev = bytes.fromhex(v.start_hash)
        prev_hex = v.start_hash.encode()
        prev2: bytes | None = None
        sha = hashlib.sha256
        good = v.good_digest
        by_size = v.by_size
        frontier = v.frontier
        hashes = frontier.hashes
        base = self.lineno - (self._pending is not None)
        lines = self._f if self._pending is None else chain((self._pending,), self._f)
        self._pending = None
        count = 0
        try:
            for raw in lines:
                count += 1
                n = len(raw)
                body = raw[9 : n - _TAIL]
                es = b"%d," % e
                i = body.rfind(b',"seq":') + 7
                k = body.rfind(b'"prev_hash":"') + 13
                if (
                    raw[n - _TAIL : n - _HASH_AT] == _HASH_KEY
                    and raw[n - 3 :] == b'"}\n'
                    and raw[:19] == _EV_PREFIX
                    and body[i : i + len(es)] == es
                    and body[k : k + 64] == prev_hex
                ):
                    d = sha(prev + body).digest()
                    h = d.hex().encode()
                    if h == raw[n - _HASH_AT : n - 3]:
                        if e in by_size or not e % 10_000:
                            v.seq = frontier.size = e - 1  # hand over the state in full
                            v.head_digest = prev
                            good(d)
                        else:  # Frontier.add inlined: the Merkle leaf and completed nodes
                            node = sha(b"\x00" + d).digest()
                            m = e - 1
                            while m & 1:
                                node = sha(b"\x01" + hashes.pop() + node).digest()
                                m >>= 1
                            hashes.append(node)
                        if body[:24] == _PRUNE_PREFIX:
                            v.saw_prune(_prune_anchor(body), e)
                        prev2, prev, prev_hex = prev, d, h
                        e += 1
                        continue
                v.seq = frontier.size = e - 1
                v.head_digest = prev
                self.lineno = base + count
                window = [self._row(raw)]
                for extra in islice(lines, WINDOW):
                    count += 1
                    self.lineno = base + count
                    window.append(self._row(extra))
                p2 = prev2.hex() if prev2 is not None else None
                seq, kind, detail = classify(window, e, prev.hex(), p2, first)
                v.damage(seq, kind, detail)
                self.rows_read = count + sum(1 for _ in lines)
                return v.finish(ended_cleanly=False)
            v.seq = frontier.size = e - 1
            v.head_digest = prev
            self.rows_read = count
            return v.finish(ended_cleanly=True)
        finally:
            self._f.close()

    def _row(self, raw: bytes) -> Row:
        where = f"line {self.lineno}"
        n = len(raw)
        if not raw.endswith(b"\n") or not raw.startswith(_EV_PREFIX) or n < 100:
            return Row(None, None, None, None, where, "not an event line")
        body = raw[9 : n - _TAIL]
        tail = raw[n - _TAIL : n - 1]
        hash_b = tail[9:73]
        if (
            not tail.startswith(_HASH_KEY)
            or not tail.endswith(b'"}')
            or not set(hash_b) <= _HEX
            or not body.endswith(b',"v":1}')
        ):
            return Row(None, None, None, None, where, "malformed event line")
        i = body.rfind(b',"seq":')
        j = body.find(b",", i + 7)
        k = body.rfind(b'"prev_hash":"')
        try:
            seq = int(body[i + 7 : j])
        except ValueError:
            return Row(None, None, None, None, where, "event line has no readable seq")
        prev = body[k + 13 : k + 77]
        if i < 0 or k < 0 or len(prev) != 64 or not set(prev) <= _HEX:
            return Row(seq, None, None, None, where, "event line has no readable prev_hash")
        prev_s = prev.decode()
        hash_s = hash_b.decode()
        claimed = seq

        def rehash(s: int) -> str:
            if s == claimed:
                return hashlib.sha256(bytes.fromhex(prev_s) + body).hexdigest()
            return rehash_json(prev_s, body)(s)

        prune_of = None
        if body.startswith(_PRUNE_PREFIX):
            prune_of = _prune_anchor(body)
        return Row(seq, prev_s, hash_s, rehash, where, None, prune_of)


def _prune_anchor(body: bytes) -> int | None:
    try:
        obj = json.loads(body)
        return int(obj["resource"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


def _typed(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}")
    return value
