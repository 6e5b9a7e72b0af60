"""Damage detection: every kind of damage is found and located at the first damaged ``seq``.

A log of 300 events with signed checkpoints at 100, 200 and 300 is tampered with by raw SQL
(as an attacker with database access would) on every engine, then verified. The same damage
done to an export file is found with the same kind and seq.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from riskguard import db
from riskguard.audit import (
    AuditLog,
    Checkpoint,
    KeyHistory,
    MemoryStore,
    SigningKey,
    SqlStore,
    VerifyReport,
    generate_signing_key,
    parse_checkpoint,
    root_of,
    verify_export,
)
from riskguard.audit._canonical import GENESIS_HASH, canonical_json, chain_hash
from riskguard.audit._event import AuditEvent
from riskguard.audit._sql import checkpoint_table, event_table, row_event
from tests.conftest import SqlNamespace

LOG_ID = "t/log"
N_EVENTS = 300
EVERY = 100
BATCH = 50
CHECKPOINT_SIZES = [100, 200, 300]

E = event_table.c
CP = checkpoint_table.c


def _fill(log: AuditLog, n: int = N_EVENTS) -> None:
    """Append ``n`` events whose ``reason`` names their seq (``r1``, ``r2``, ...)."""
    for lo in range(0, n, BATCH):
        log.append(
            [
                log.event("order.read", "allow", reason=f"r{s}", details={"i": s, "城市": "北京"})
                for s in range(lo + 1, min(lo + BATCH, n) + 1)
            ]
        )


def _new_log(store: SqlStore | MemoryStore, key: SigningKey) -> AuditLog:
    return AuditLog(
        store,
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=EVERY,
        checkpoint_every_seconds=0,
        witness_path=None,
    )


@dataclass
class Built:
    """A filled SQL log, its key and its engine."""

    log: AuditLog
    key: SigningKey
    engine: Engine

    def verify(self, **kwargs: Any) -> VerifyReport:
        return self.log.verify(**kwargs)

    def notes(self) -> list[str]:
        return [cp.note for cp in self.log.checkpoints()]


@pytest.fixture
def built(sql_schema: SqlNamespace) -> Built:
    key = generate_signing_key("test-key")
    log = _new_log(SqlStore(sql_schema.engine, LOG_ID), key)
    _fill(log)
    return Built(log, key, sql_schema.engine)


# -- raw SQL tampering -------------------------------------------------------------------


def _event(conn: Connection, seq: int) -> AuditEvent:
    return row_event(conn.execute(sa.select(event_table).where(E.seq == seq)).one())


def _raw(conn: Connection, seq: int) -> dict[str, Any]:
    """The stored columns of ``seq``, without ``seq`` itself."""
    row = conn.execute(sa.select(event_table).where(E.seq == seq)).one()
    return {k: v for k, v in row._mapping.items() if k != "seq"}


def _update(conn: Connection, seq: int, **values: Any) -> None:
    assert conn.execute(event_table.update().where(E.seq == seq).values(**values)).rowcount == 1


def _delete(conn: Connection, where: Any) -> None:
    conn.execute(event_table.delete().where(where))


def _shift(conn: Connection, start: int, delta: int) -> None:
    """Renumber every row with ``seq >= start`` by ``delta`` (through a temporary offset, so
    that no engine sees a primary-key clash half-way)."""
    offset = 1_000_000
    conn.execute(event_table.update().where(E.seq >= start).values(seq=E.seq + offset))
    conn.execute(event_table.update().where(E.seq >= offset).values(seq=E.seq - offset + delta))


def _rewrite_suffix(conn: Connection, start: int) -> list[AuditEvent]:
    """Rewrite the ``reason`` of every event from ``start`` on with a consistent chain; return
    the whole log as it now is."""
    events = [row_event(r) for r in conn.execute(sa.select(event_table).order_by(E.seq))]
    prev = events[start - 2].hash
    for ev in events[start - 1 :]:
        new = replace(ev, reason=f"rewritten {ev.seq}", prev_hash=prev)
        new = replace(new, hash=new.compute_hash())
        _update(conn, ev.seq, reason=new.reason, prev_hash=new.prev_hash, hash=new.hash)
        events[ev.seq - 1] = new
        prev = new.hash
    return events


def _resign_stored(conn: Connection, events: list[AuditEvent], key: SigningKey) -> None:
    """Replace every stored checkpoint with one signed by ``key`` over ``events``."""
    for size, note in conn.execute(sa.select(CP.tree_size, CP.note)).all():
        cp = parse_checkpoint(note).checkpoint
        root = root_of(bytes.fromhex(e.hash) for e in events[:size])
        new = Checkpoint(cp.origin, size, root, events[size - 1].hash, cp.time).sign([key])
        conn.execute(checkpoint_table.update().where(CP.tree_size == size).values(note=new.note))


def _flip_signature_char(note: str) -> str:
    """``note`` with one base64 character of its signature changed (it still parses)."""
    body, _, sig = note.partition("\n\n")
    head, _, b64 = sig.rstrip("\n").rpartition(" ")
    i = 40  # inside the Ed25519 signature, past the 4-byte key id
    b64 = b64[:i] + ("A" if b64[i] != "A" else "B") + b64[i + 1 :]
    return f"{body}\n\n{head} {b64}\n"


def _other_root(root: bytes) -> bytes:
    return hashlib.sha256(b"another tree" + root).digest()


# -- intact ------------------------------------------------------------------------------


def test_intact_log_verifies(built: Built) -> None:
    report = built.verify()
    assert (report.ok, report.checked, report.checkpoints, report.kind) == (True, 300, 3, None)


def test_intact_log_has_the_expected_checkpoints(built: Built) -> None:
    sizes = [cp.checkpoint.tree_size for cp in built.log.checkpoints()]
    assert sizes == CHECKPOINT_SIZES


def test_intact_log_verifies_with_its_checkpoints_as_witness(built: Built) -> None:
    report = built.verify(external=[("witness", n) for n in built.notes()])
    assert report.ok, report.detail


# -- one kind of damage at a time --------------------------------------------------------


def _kind_at(report: VerifyReport) -> tuple[bool, str | None, int | None]:
    return report.ok, report.kind, report.first_bad_seq


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "forged"),
        ("details", '{"i":150,"城市":"上海"}'),
        ("action", "order.delete"),
        ("outcome", "deny"),
        ("ts", "2020-01-01T00:00:00.000000Z"),
        ("resource_type", "order"),
    ],
)
def test_modified_column(built: Built, column: str, value: str) -> None:
    with built.engine.begin() as conn:
        _update(conn, 150, **{column: value})
    assert _kind_at(built.verify()) == (False, "modified", 150)


def test_modified_hash_column(built: Built) -> None:
    with built.engine.begin() as conn:
        _update(conn, 150, hash="0" * 64)
    assert _kind_at(built.verify()) == (False, "modified", 150)


# 200 and 300 are checkpoint sizes: the altered event is the last one a checkpoint covers
# (at 300 it has no successor either, so only the signed root shows it).
@pytest.mark.parametrize("seq", [1, 150, 200, 300])
def test_modified_and_rehashed(built: Built, seq: int) -> None:
    with built.engine.begin() as conn:
        forged = replace(_event(conn, seq), reason="forged")
        _update(conn, seq, reason="forged", hash=forged.compute_hash())
    # seq is self-consistent now; seq + 1 no longer links to it.
    assert _kind_at(built.verify()) == (False, "modified", seq)


@pytest.mark.parametrize("seq", [1, 150, 299])
def test_deleted(built: Built, seq: int) -> None:
    with built.engine.begin() as conn:
        _delete(conn, E.seq == seq)
    assert _kind_at(built.verify()) == (False, "deleted", seq)


def test_deleted_run(built: Built) -> None:
    with built.engine.begin() as conn:
        _delete(conn, E.seq.between(150, 155))
    assert _kind_at(built.verify()) == (False, "deleted", 150)


def test_deleted_and_renumbered(built: Built) -> None:
    with built.engine.begin() as conn:
        _delete(conn, E.seq == 150)
        _shift(conn, 151, -1)
    assert _kind_at(built.verify()) == (False, "deleted", 150)


def _insert_forged(conn: Connection, seq: int) -> None:
    """Renumber ``seq`` and later by +1 and put a forged event at ``seq`` whose hash is
    self-consistent and that links to ``seq - 1``."""
    prev = _event(conn, seq - 1).hash if seq > 1 else GENESIS_HASH
    template = _event(conn, seq)
    _shift(conn, seq, +1)
    forged = replace(template, id="f" * 32, reason="forged", details_json='{"i":0}', prev_hash=prev)
    forged = replace(forged, hash=forged.compute_hash())
    values = {**_raw(conn, seq + 1), "seq": seq, "event_id": forged.id, "reason": forged.reason,
              "details": forged.details_json, "prev_hash": prev, "hash": forged.hash}  # fmt: skip
    conn.execute(event_table.insert().values(**values))


@pytest.mark.parametrize("seq", [1, 150, 200, 300])
def test_inserted(built: Built, seq: int) -> None:
    with built.engine.begin() as conn:
        _insert_forged(conn, seq)
    assert _kind_at(built.verify()) == (False, "inserted", seq)


@pytest.mark.parametrize("source", [149, 10], ids=["previous", "older"])
def test_inserted_replayed_copy(built: Built, source: int) -> None:
    """A copy of an earlier event replayed at seq 150 (the later rows renumbered)."""
    with built.engine.begin() as conn:
        copy = {**_raw(conn, source), "seq": 150}
        _shift(conn, 150, +1)
        conn.execute(event_table.insert().values(**copy))
    assert _kind_at(built.verify()) == (False, "inserted", 150)


def test_reordered(built: Built) -> None:
    with built.engine.begin() as conn:
        a, b = _raw(conn, 150), _raw(conn, 151)
        _update(conn, 150, **b)
        _update(conn, 151, **a)
    assert _kind_at(built.verify()) == (False, "reordered", 150)


def test_truncated_below_a_stored_checkpoint(built: Built) -> None:
    with built.engine.begin() as conn:
        _delete(conn, E.seq > 250)
    assert _kind_at(built.verify()) == (False, "truncated", 251)


def test_truncated_with_its_checkpoints_is_found_by_a_witness(built: Built) -> None:
    witness = built.notes()[-1]  # size 300
    with built.engine.begin() as conn:
        _delete(conn, E.seq > 250)
        conn.execute(checkpoint_table.delete().where(CP.tree_size > 250))
    assert built.verify().ok  # the database alone no longer shows it
    report = built.verify(external=[("witness", witness)])
    assert _kind_at(report) == (False, "truncated", 251)


def test_bad_signature_on_a_stored_checkpoint(built: Built) -> None:
    with built.engine.begin() as conn:
        note = conn.execute(sa.select(CP.note).where(CP.tree_size == 200)).scalar_one()
        tampered = _flip_signature_char(note)
        parse_checkpoint(tampered)  # still well-formed: only the signature is wrong
        conn.execute(checkpoint_table.update().where(CP.tree_size == 200).values(note=tampered))
    assert _kind_at(built.verify()) == (False, "bad_signature", 200)


def test_bad_signature_on_an_edited_checkpoint_body(built: Built) -> None:
    with built.engine.begin() as conn:
        note = conn.execute(sa.select(CP.note).where(CP.tree_size == 200)).scalar_one()
        cp = parse_checkpoint(note).checkpoint
        forged = note.replace(f"head {cp.head_hash}", f"head {'0' * 64}")
        conn.execute(checkpoint_table.update().where(CP.tree_size == 200).values(note=forged))
    assert _kind_at(built.verify()) == (False, "bad_signature", 200)


def test_unknown_key(built: Built) -> None:
    other = generate_signing_key("other-key")
    report = built.verify(trusted=[other.trusted()])
    assert _kind_at(report) == (False, "unknown_key", 100)


def test_fork_by_a_second_signed_root(built: Built) -> None:
    cp = built.log.checkpoints()[1].checkpoint  # size 200
    fork = Checkpoint(cp.origin, cp.tree_size, _other_root(cp.root), cp.head_hash, cp.time)
    report = built.verify(external=[("witness", fork.sign([built.key]).note)])
    # The damage lies after the last checkpoint both agree on (100), within 101..200.
    assert _kind_at(report) == (False, "fork", 101)


def test_fork_by_a_rewritten_and_resigned_suffix(built: Built) -> None:
    witness = [("witness", n) for n in built.notes()]
    with built.engine.begin() as conn:
        events = _rewrite_suffix(conn, 150)
        _resign_stored(conn, events, built.key)
    report = built.verify(external=witness)
    assert report.kind == "fork" and not report.ok
    assert report.first_bad_seq is not None and 100 < report.first_bad_seq <= 150


def test_rewritten_and_resigned_suffix_is_invisible_without_a_witness(built: Built) -> None:
    """Why the witness matters: a key holder can rewrite history consistently."""
    with built.engine.begin() as conn:
        _resign_stored(conn, _rewrite_suffix(conn, 150), built.key)
    assert built.verify().ok


@pytest.mark.parametrize("start", [200, 300])
def test_rewrite_from_a_checkpoint_size_is_located_exactly(built: Built, start: int) -> None:
    """The checkpoint at ``start`` agrees with the log but for its last event: the damage
    starts there, not after the checkpoint before."""
    with built.engine.begin() as conn:
        _rewrite_suffix(conn, start)
    assert _kind_at(built.verify()) == (False, "modified", start)


def test_rewritten_suffix_without_resigning_is_modified(built: Built) -> None:
    with built.engine.begin() as conn:
        _rewrite_suffix(conn, 150)
    report = built.verify()
    assert report.kind == "modified" and not report.ok
    # Located in the range after the last checkpoint that still matches (100).
    assert report.first_bad_seq is not None and 100 < report.first_bad_seq <= 150


# -- several kinds at once: the first damaged seq decides --------------------------------


def _modify(seq: int) -> Callable[[Connection], None]:
    return lambda conn: _update(conn, seq, reason="forged")


def _remove(seq: int) -> Callable[[Connection], None]:
    return lambda conn: _delete(conn, E.seq == seq)


def _bad_sig(size: int) -> Callable[[Connection], None]:
    def tamper(conn: Connection) -> None:
        note = conn.execute(sa.select(CP.note).where(CP.tree_size == size)).scalar_one()
        conn.execute(
            checkpoint_table.update()
            .where(CP.tree_size == size)
            .values(note=_flip_signature_char(note))
        )

    return tamper


def _truncate(after: int) -> Callable[[Connection], None]:
    return lambda conn: _delete(conn, E.seq > after)


@pytest.mark.parametrize(
    ("damages", "expected"),
    [
        pytest.param([_modify(50), _remove(200)], ("modified", 50), id="modified50-deleted200"),
        pytest.param([_remove(50), _modify(200)], ("deleted", 50), id="deleted50-modified200"),
        pytest.param([_modify(250), _bad_sig(200)], ("bad_signature", 200), id="badsig200-mod250"),
        pytest.param([_modify(150), _bad_sig(200)], ("modified", 150), id="mod150-badsig200"),
        pytest.param([_bad_sig(200), _truncate(280)], ("bad_signature", 200), id="badsig200-trunc"),
        pytest.param([_modify(250), _truncate(280)], ("modified", 250), id="mod250-trunc281"),
    ],
)
def test_first_damaged_seq_decides(
    built: Built, damages: list[Callable[[Connection], None]], expected: tuple[str, int]
) -> None:
    with built.engine.begin() as conn:
        for damage in damages:
            damage(conn)
    report = built.verify()
    assert (report.ok, report.kind, report.first_bad_seq) == (False, *expected)


# -- the same damage in an export file ---------------------------------------------------


@pytest.fixture(scope="module")
def export_lines(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], SigningKey]:
    """An export of a 300-event log as its lines (header, 3 checkpoints, events)."""
    key = generate_signing_key("test-key")
    log = _new_log(MemoryStore(LOG_ID), key)
    _fill(log)
    path = tmp_path_factory.mktemp("export") / "log.jsonl"
    log.export(path)
    return path.read_bytes().splitlines(keepends=True), key


def _event_line(seq: int) -> int:
    """The index of event ``seq``'s line (after the header and 3 checkpoint lines)."""
    return len(CHECKPOINT_SIZES) + seq


def _forged_line(lines: list[bytes], seq: int) -> bytes:
    """A self-consistent event line at ``seq`` that links to the line of ``seq - 1``."""
    prev = json.loads(lines[_event_line(seq - 1)])["hash"]
    event = json.loads(lines[_event_line(seq)])["event"]
    event.update(id="f" * 32, reason="forged", prev_hash=prev, seq=seq)
    text = canonical_json(event)
    return f'{{"event":{text},"hash":"{chain_hash(prev, text)}"}}\n'.encode()


def _damage_modified(lines: list[bytes]) -> list[bytes]:
    out = list(lines)
    i = _event_line(150)
    assert b'"reason":"r150"' in out[i]
    out[i] = out[i].replace(b'"reason":"r150"', b'"reason":"r15O"')
    return out


def _damage_deleted(lines: list[bytes]) -> list[bytes]:
    return lines[: _event_line(150)] + lines[_event_line(151) :]


def _damage_inserted(lines: list[bytes]) -> list[bytes]:
    i = _event_line(150)
    return [*lines[:i], _forged_line(lines, 150), *lines[i:]]


def _damage_replayed(lines: list[bytes]) -> list[bytes]:
    i = _event_line(149)
    return [*lines[: i + 1], lines[i], *lines[i + 1 :]]


def _damage_reordered(lines: list[bytes]) -> list[bytes]:
    out = list(lines)
    i = _event_line(150)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _damage_truncated(lines: list[bytes]) -> list[bytes]:
    return lines[: _event_line(250) + 1]


def _rehash_line(lines: list[bytes], seq: int) -> list[bytes]:
    out = list(lines)
    i = _event_line(seq)
    event = json.loads(out[i])["event"]
    event["reason"] = "forged"
    text = canonical_json(event)
    out[i] = f'{{"event":{text},"hash":"{chain_hash(event["prev_hash"], text)}"}}\n'.encode()
    return out


def _damage_rehashed(lines: list[bytes]) -> list[bytes]:
    return _rehash_line(lines, 150)


def _damage_rehashed_at_checkpoint(lines: list[bytes]) -> list[bytes]:
    return _rehash_line(lines, 200)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_damage_modified, ("modified", 150)),
        (_damage_rehashed, ("modified", 150)),
        (_damage_rehashed_at_checkpoint, ("modified", 200)),
        (_damage_deleted, ("deleted", 150)),
        (_damage_inserted, ("inserted", 150)),
        (_damage_replayed, ("inserted", 150)),
        (_damage_reordered, ("reordered", 150)),
        (_damage_truncated, ("truncated", 251)),
    ],
    ids=[
        "modified",
        "rehashed",
        "rehashed-at-200",
        "deleted",
        "inserted",
        "replayed",
        "reordered",
        "truncated",
    ],
)
def test_export_damage(
    export_lines: tuple[list[bytes], SigningKey],
    tmp_path: Path,
    damage: Callable[[list[bytes]], list[bytes]],
    expected: tuple[str, int],
) -> None:
    lines, key = export_lines
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(damage(lines)))
    report = verify_export(path, [key.trusted()])
    assert (report.ok, report.kind, report.first_bad_seq) == (False, *expected)


def test_export_intact(export_lines: tuple[list[bytes], SigningKey], tmp_path: Path) -> None:
    lines, key = export_lines
    path = tmp_path / "intact.jsonl"
    path.write_bytes(b"".join(lines))
    report = verify_export(path, [key.trusted()])
    assert (report.ok, report.checked, report.checkpoints) == (True, 300, 3)


def test_export_of_sql_log_verifies(built: Built, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    assert built.log.export(path) == N_EVENTS
    report = verify_export(path, [built.key.trusted()])
    assert (report.ok, report.checked, report.checkpoints) == (True, 300, 3)


def test_export_of_damaged_sql_log_is_found(built: Built, tmp_path: Path) -> None:
    with built.engine.begin() as conn:
        _update(conn, 150, details='{"i":-1}')
    path = tmp_path / "log.jsonl"
    built.log.export(path)
    report = verify_export(path, [built.key.trusted()])
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "modified", 150)


# -- scale -------------------------------------------------------------------------------

BIG = 100_000


@dataclass
class BigLog:
    log: AuditLog
    key: SigningKey
    export: Path


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigLog]:
    """100k events in a SQLite file (1000 per batch, a checkpoint every 10k) and its export."""
    d = tmp_path_factory.mktemp("big")
    engine = db.create_engine(f"sqlite:///{d / 'audit.db'}")
    db.create_schema(engine)
    key = generate_signing_key("test-key")
    log = AuditLog(
        SqlStore(engine, LOG_ID),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=10_000,
        checkpoint_every_seconds=0,
        witness_path=None,
    )
    for lo in range(0, BIG, 1000):
        log.append([log.event("order.read", "allow", details={"i": lo + i}) for i in range(1000)])
    log.export(d / "audit.jsonl")
    yield BigLog(log, key, d / "audit.jsonl")
    engine.dispose()


@pytest.mark.slow
def test_100k_event_log_verifies(big_log: BigLog) -> None:
    report = big_log.log.verify()
    assert (report.ok, report.checked, report.checkpoints) == (True, BIG, 10), report.detail


@pytest.mark.slow
def test_100k_event_export_verifies(big_log: BigLog) -> None:
    report = verify_export(big_log.export, [big_log.key.trusted()])
    assert (report.ok, report.checked, report.checkpoints) == (True, BIG, 10), report.detail


@pytest.mark.slow
def test_100k_event_export_damage_near_the_end_is_located(big_log: BigLog, tmp_path: Path) -> None:
    lines = big_log.export.read_bytes().splitlines(keepends=True)
    i = 10 + 99_990  # header, 10 checkpoint lines, then seq 1 at index 11
    lines[i] = lines[i].replace(b'"details":{"i":99989}', b'"details":{"i":99988}')
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(lines))
    report = verify_export(path, [big_log.key.trusted()])
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "modified", 99_990)
