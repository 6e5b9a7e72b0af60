"""The store contract: :class:`MemoryStore` and :class:`SqlStore` (SQLite, PostgreSQL,
MariaDB) behave the same behind :class:`AuditLog` — appends, all-or-none batches, search,
proofs, archive — and both report damage the same way."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from riskguard import db
from riskguard.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditLog,
    AuditStore,
    ConsistencyProof,
    Head,
    InclusionProof,
    KeyHistory,
    MemoryStore,
    SearchFilter,
    SigningKey,
    SqlStore,
    format_ts,
    generate_signing_key,
    verify_export,
)
from riskguard.audit._sql import event_table, event_tuple, event_values, head_table, node_table
from riskguard.audit._store import frontier_at
from riskguard.context import Principal, request_context
from riskguard.errors import AuditError, ConfigError
from riskguard.types import ResourceRef
from tests.conftest import SqlNamespace

LOG_ID = "t/log"
ACTION = "order.read"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Backend:
    """One store implementation, with the test's hands-on access to its storage."""

    def __init__(self, kind: str, ns: SqlNamespace | None) -> None:
        self.kind = kind
        self.ns = ns
        self._memory: dict[str, MemoryStore] = {}
        self._engines: list[sa.Engine] = []

    def store(self, log_id: str = LOG_ID) -> AuditStore:
        if self.ns is None:
            return self._memory.setdefault(log_id, MemoryStore(log_id))
        return SqlStore(self.ns.engine, log_id)

    def reopen(self) -> AuditStore:
        """The same log through a new handle (for SQL: a new engine, as another process)."""
        if self.ns is None:
            return self._memory[LOG_ID]
        engine = self.ns.new_engine()
        self._engines.append(engine)
        return SqlStore(engine, LOG_ID)

    def delete_events(self, store: AuditStore, first: int, last: int) -> None:
        """Delete events by hand, bypassing the log (what an intruder with write access does)."""
        if isinstance(store, MemoryStore):
            for seq in range(first, last + 1):
                del store._events[seq]
            return
        assert self.ns is not None
        c = event_table.c
        with self.ns.engine.begin() as conn:
            conn.execute(event_table.delete().where(c.seq >= first, c.seq <= last))

    def set_head(self, store: AuditStore, head: Head) -> None:
        """Overwrite the stored head by hand."""
        if isinstance(store, MemoryStore):
            store._head = head
            return
        assert self.ns is not None
        with self.ns.engine.begin() as conn:
            conn.execute(
                head_table.update().values(
                    pruned_through=head.pruned_through,
                    anchor_hash=head.anchor_hash,
                    anchor_frontier=head.anchor_frontier.to_text(),
                )
            )

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()


_BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=_BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    ns: SqlNamespace | None = None
    if request.param != "memory":
        ns = request.getfixturevalue(f"{request.param}_ns")
        db.create_schema(ns.engine)
    b = Backend(request.param, ns)
    yield b
    b.close()


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key("test-key")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _log(
    store: AuditStore, key: SigningKey, clock: Clock, every: int = 0, **kwargs: Any
) -> AuditLog:
    return AuditLog(
        store,
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=every,
        checkpoint_every_seconds=0,
        clock=clock,
        **kwargs,
    )


def _record_n(log: AuditLog, n: int, clock: Clock | None = None) -> list[AuditEvent]:
    out = []
    for i in range(n):
        ev = log.record(ACTION, "allow", details={"i": i})
        assert isinstance(ev, AuditEvent)
        out.append(ev)
        if clock is not None:
            clock.tick(seconds=1)
    return out


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x01]) + h[1:]


def _state(head: Head) -> tuple[Any, ...]:
    return (
        head.seq, head.hash, head.frontier.to_text(), head.checkpoint_size,
        head.pruned_through, head.anchor_hash, head.anchor_frontier.to_text(),
    )  # fmt: skip


def _assert_ok(log: AuditLog, checked: int | None = None) -> None:
    report = log.verify()
    assert report.ok, report.detail
    if checked is not None:
        assert report.checked == checked


# -- appending ---------------------------------------------------------------------------


def test_append_returns_consecutive_seqs_in_one_chain(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    log = _log(backend.store(), key, clock)
    singles = _record_n(log, 3)
    with log.batch() as queue:
        for i in range(3, 7):
            log.record(ACTION, "allow", details={"i": i})
    rich = {"i": 7, "note": "订单-✓", "nested": {"b": [1, 2.5, None, True]}}
    appended = log.append(
        [log.event(ACTION, "success", details=rich)]
        + [log.event(ACTION, "success", details={"i": i}) for i in (8, 9)]
    )
    assert [e.seq for e in singles] == [1, 2, 3]
    assert [e.seq for e in appended] == [8, 9, 10]
    assert log.append([]) == []

    stored = list(log.store.events())
    assert [e.seq for e in stored] == list(range(1, 11))
    assert [e.id for e in stored[3:7]] == [p.id for p in queue]
    assert [e.details["i"] for e in stored] == list(range(10))
    # Read back exactly as returned (the hash covers every byte of it).
    assert stored[:3] == singles
    assert stored[7:] == appended
    assert stored[7].details == rich
    assert stored[0].prev_hash == GENESIS_HASH
    for prev, ev in itertools.pairwise(stored):
        assert ev.prev_hash == prev.hash
        assert ev.compute_hash() == ev.hash
    head = log.head()
    assert (head.seq, head.hash) == (10, stored[-1].hash)
    assert head.frontier.root() == log.root(10)

    # Another handle on the same log (another process, for SQL) continues the chain.
    other = _log(backend.reopen(), key, clock)
    nxt = other.record(ACTION, "allow")
    assert isinstance(nxt, AuditEvent)
    assert (nxt.seq, nxt.prev_hash) == (11, stored[-1].hash)
    assert log.head().seq == 11
    _assert_ok(log, 11)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"x": object()}, id="unserialisable"),
        pytest.param({"blob": "x" * 300}, id="oversize"),
    ],
)
def test_batch_with_an_invalid_event_appends_nothing(
    backend: Backend, key: SigningKey, clock: Clock, bad: dict[str, Any]
) -> None:
    log = _log(backend.store(), key, clock, max_details_bytes=256)
    first = log.record(ACTION, "allow", details={"i": 0})

    with pytest.raises(AuditError), log.batch():
        log.record(ACTION, "allow", details={"i": 1})
        log.record(ACTION, "allow", details=bad)
    assert log.head().seq == 1
    assert list(log.store.events()) == [first]

    # Also when the caller catches the error inside the block: the batch is all or none.
    with log.batch():
        log.record(ACTION, "allow", details={"i": 2})
        with pytest.raises(AuditError):
            log.record(ACTION, "allow", details=bad)
    assert log.head().seq == 1

    # The next clean batch lands whole, right after.
    with log.batch():
        log.record(ACTION, "allow", details={"i": 3})
        log.record(ACTION, "allow", details={"i": 4})
    assert [e.details["i"] for e in log.store.events()] == [0, 3, 4]
    _assert_ok(log, 3)


def test_invalid_single_events_raise_and_append_nothing(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    log = _log(backend.store(), key, clock, max_details_bytes=256)
    # canonical '{"blob":"…"}' is 11 bytes plus the string: 245 x's are exactly the cap.
    at_cap = log.record(ACTION, "allow", details={"blob": "x" * 245})
    assert len(at_cap.details_json.encode()) == 256
    with pytest.raises(AuditError, match="over the cap of 256"):
        log.record(ACTION, "allow", details={"blob": "x" * 246})
    with pytest.raises(AuditError, match=r"details\.x"):
        log.record(ACTION, "allow", details={"x": object()})
    with pytest.raises(AuditError):
        log.record(ACTION, "allow", details={"f": float("nan")})
    with pytest.raises(AuditError):
        log.record("Order Read", "allow")
    with pytest.raises(AuditError):
        log.record(ACTION, "maybe")  # type: ignore[arg-type]
    assert log.head().seq == 1
    assert [e.id for e in log.store.events()] == [at_cap.id]
    _assert_ok(log, 1)


def test_a_store_failure_mid_append_rolls_back_the_whole_batch(
    sql_schema: SqlNamespace, key: SigningKey, clock: Clock
) -> None:
    """The database fails on the head update — after the events and the Merkle node of
    this batch were written in the transaction — and none of it stays."""
    log = _log(SqlStore(sql_schema.engine, LOG_ID), key, clock)
    _record_n(log, 5)
    before = log.head()

    def fail_on_head_update(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().startswith("UPDATE rg_audit_head"):
            raise RuntimeError("injected failure")

    sa.event.listen(sql_schema.engine, "before_cursor_execute", fail_on_head_update)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            log.append([log.event(ACTION, "allow", details={"i": i}) for i in range(300)])
    finally:
        sa.event.remove(sql_schema.engine, "before_cursor_execute", fail_on_head_update)

    assert _state(log.head()) == _state(before)
    with sql_schema.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(event_table)).scalar() == 5
        assert conn.execute(sa.select(sa.func.count()).select_from(node_table)).scalar() == 0
    again = log.append([log.event(ACTION, "allow", details={"i": i}) for i in range(300)])
    assert [e.seq for e in again] == list(range(6, 306))
    _assert_ok(log, 305)


def test_another_log_id_on_the_same_database_is_refused(
    sql_schema: SqlNamespace, key: SigningKey, clock: Clock
) -> None:
    log = _log(SqlStore(sql_schema.engine, LOG_ID), key, clock)
    _record_n(log, 3)
    engine = sql_schema.new_engine()
    try:
        other = _log(SqlStore(engine, "other/log"), key, clock)
        with pytest.raises(ConfigError) as err:
            other.record(ACTION, "allow")
        assert err.value.key == "audit.log_id"
        assert "'t/log'" in str(err.value)
        with pytest.raises(ConfigError):
            other.head()
        # The same name through a new engine is the same log.
        assert SqlStore(engine, LOG_ID).head().seq == 3
    finally:
        engine.dispose()
    assert log.head().seq == 3
    _assert_ok(log, 3)


def test_a_fresh_database_belongs_to_the_first_log_that_uses_it(sql_schema: SqlNamespace) -> None:
    assert SqlStore(sql_schema.engine, "first/log").head().seq == 0
    with pytest.raises(ConfigError):
        SqlStore(sql_schema.engine, "second/log").head()


# -- search ------------------------------------------------------------------------------


def test_search_by_action_actor_resource_request_and_time(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    log = _log(backend.store(), key, clock)
    with request_context(Principal("u1", domain="m1", roles=("clerk",))) as req1:
        log.record("order.read", "allow", resource=ResourceRef("order", "o1"))  # 1, T0
        clock.tick(hours=1)
        log.record("order.update", "deny", resource=ResourceRef("order", "o2"))  # 2, T0+1h
    clock.tick(hours=1)
    with request_context(Principal("u2")):
        log.record("order.read", "allow", resource=ResourceRef("customer", "o1"))  # 3, +2h
    clock.tick(hours=1)
    log.record("auth.login", "failure", details={"method": "password"})  # 4, T0+3h, no actor
    clock.tick(hours=1)
    with request_context(Principal("u1")):
        log.record("order.read", "allow", resource=ResourceRef("order", "o1"))  # 5, T0+4h

    def seqs(**flt: Any) -> list[int]:
        return [e.seq for e in log.search(SearchFilter(**flt))]

    assert seqs() == [5, 4, 3, 2, 1]  # newest first
    assert [e.seq for e in log.search(newest_first=False, limit=2)] == [1, 2]
    assert seqs(action="order.read") == [5, 3, 1]
    assert seqs(action="order.*") == [5, 3, 2, 1]
    assert seqs(action="order.") == []
    assert seqs(outcome="deny") == [2]
    assert seqs(actor="u1") == [5, 2, 1]
    assert seqs(actor="u2") == [3]
    assert seqs(actor="nobody") == []
    assert seqs(request_id=req1.request_id) == [2, 1]
    assert seqs(resource_type="order", resource_id="o1") == [5, 1]
    assert seqs(resource_type="order") == [5, 2, 1]
    assert seqs(resource_id="o1") == [5, 3, 1]
    assert seqs(since=format_ts(T0 + timedelta(hours=1))) == [5, 4, 3, 2]  # inclusive
    assert seqs(until=format_ts(T0 + timedelta(hours=1))) == [1]  # exclusive
    window = {
        "since": format_ts(T0 + timedelta(minutes=30)),
        "until": format_ts(T0 + timedelta(hours=3)),
    }
    assert seqs(**window) == [3, 2]
    assert seqs(actor="u1", action="order.read", **window) == []
    assert seqs(actor="u1", action="order.read") == [5, 1]

    first = log.search(SearchFilter(actor="u1"), newest_first=False, limit=1)[0]
    assert first.actor == {
        "id": "u1",
        "type": "user",
        "tenant": "m1",
        "roles": ["clerk"],
        "ip": None,
    }
    assert first.resource == {"type": "order", "id": "o1", "tenant": None}
    assert first.request_id == req1.request_id
    assert first.ts == format_ts(T0)
    assert log.search(SearchFilter(actor="u2"))[0].actor == {
        "id": "u2", "type": "user", "tenant": None, "roles": [], "ip": None,
    }  # fmt: skip


# -- proofs ------------------------------------------------------------------------------


def _log_of_300(backend: Backend, key: SigningKey, clock: Clock) -> AuditLog:
    log = _log(backend.store(), key, clock, every=64)
    _record_n(log, 300, clock)
    log.checkpoint()
    sizes = [cp.checkpoint.tree_size for cp in log.checkpoints()]
    assert sizes == [64, 128, 192, 256, 300]
    return log


def test_inclusion_proof_of_every_event_verifies_against_the_signed_root(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    log = _log_of_300(backend, key, clock)
    latest = log.latest_checkpoint()
    assert latest is not None
    latest.verify(log.trusted_keys() or [])
    root = latest.checkpoint.root
    assert root == log.root(300)
    other_roots = [log.root(299), log.checkpoints()[-2].checkpoint.root, _flip(root)]
    hashes = {e.seq: e.hash for e in log.store.events()}
    for seq in range(1, 301):
        proof = log.prove(seq)
        assert (proof.seq, proof.tree_size) == (seq, 300)
        assert proof.event_hash == bytes.fromhex(hashes[seq])
        assert proof.verify(root), seq
        assert InclusionProof.from_bytes(proof.to_bytes()).verify(root)
        assert InclusionProof.from_json(proof.to_json()).verify(root)
        assert not any(proof.verify(r) for r in other_roots), seq
        for k in range(len(proof.path)):
            path = list(proof.path)
            path[k] = _flip(path[k])
            assert not replace(proof, path=tuple(path)).verify(root), (seq, k)
        assert not replace(proof, path=proof.path[:-1]).verify(root)
        assert not replace(proof, event_hash=_flip(proof.event_hash)).verify(root)
        wrong_seq = seq % 300 + 1
        assert not replace(proof, seq=wrong_seq).verify(root), seq

    # A proof in an older checkpoint's tree verifies against that checkpoint's root.
    old = log.checkpoints()[1].checkpoint
    for seq in (1, 77, 128):
        assert log.prove(seq, tree_size=old.tree_size).verify(old.root)
    # No checkpoint covers a newer event yet.
    log.record(ACTION, "allow")
    with pytest.raises(AuditError, match="no checkpoint covers seq 301"):
        log.prove(301)
    with pytest.raises(AuditError):
        log.prove(0)


def test_consistency_proofs_between_all_checkpoints_verify_and_catch_tampering(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    log = _log_of_300(backend, key, clock)
    cps = [cp.checkpoint for cp in log.checkpoints()]
    for a, b in itertools.combinations(cps, 2):
        proof = log.prove_consistency(a.tree_size, b.tree_size)
        assert proof.verify(a.root, b.root), (a.tree_size, b.tree_size)
        assert ConsistencyProof.from_json(proof.to_json()).verify(a.root, b.root)
        assert not proof.verify(b.root, a.root)
        assert not proof.verify(_flip(a.root), b.root)
        assert not proof.verify(a.root, _flip(b.root))
        assert not proof.verify(a.root, log.root(b.tree_size - 1))
        for k in range(len(proof.path)):
            path = list(proof.path)
            path[k] = _flip(path[k])
            assert not replace(proof, path=tuple(path)).verify(a.root, b.root), (a, b, k)
        assert not replace(proof, path=proof.path[:-1]).verify(a.root, b.root)
        assert not replace(proof, first=a.tree_size + 1).verify(a.root, b.root)
    with pytest.raises(AuditError):
        log.prove_consistency(64, 301)
    with pytest.raises(AuditError):
        log.prove_consistency(128, 64)


# -- archive -----------------------------------------------------------------------------


def _old_and_new(backend: Backend, key: SigningKey, clock: Clock) -> AuditLog:
    """150 events at T0 (checkpoints at 64, 128 and 150), then 100 events 200 days later
    (a checkpoint at 214)."""
    log = _log(backend.store(), key, clock, every=64)
    _record_n(log, 150, clock)
    log.checkpoint()
    clock.tick(days=200)
    _record_n(log, 100, clock)
    assert [c.checkpoint.tree_size for c in log.checkpoints()] == [64, 128, 150, 214]
    return log


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_exports_and_prunes_old_events_and_the_rest_still_verifies(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    log = _old_and_new(backend, key, clock)
    hashes = {e.seq: e.hash for e in log.store.events()}
    out = tmp_path / "archive-1.jsonl"

    rec = log.archive(out, older_than_days=183)

    # The prune record names what went where.
    assert rec is not None
    assert (rec.seq, rec.action, rec.outcome) == (251, "audit.prune", "success")
    assert rec.resource == {"type": "audit.log", "id": "150", "tenant": None}
    assert rec.details == {
        "through_seq": 150, "archive_sha256": _sha256(out), "archive": out.name,
    }  # fmt: skip
    # The export holds events 1..150 (every one older than 183 days) and verifies offline.
    exported = verify_export(out, log.trusted_keys())
    assert exported.ok, exported.detail
    assert exported.checked == 150
    assert exported.checkpoints == 3
    # They are gone from the store; the young ones are all still there.
    head = log.head()
    assert (head.seq, head.pruned_through, head.anchor_hash) == (251, 150, hashes[150])
    assert [e.seq for e in log.store.events()] == list(range(151, 252))
    assert log.search(SearchFilter(until=format_ts(T0 + timedelta(days=17)))) == []
    assert [e.hash for e in log.store.events(until=250)] == [hashes[s] for s in range(151, 251)]
    # The remaining log verifies from the anchor.
    _assert_ok(log, 101)

    # Proofs for the remaining events still verify, against a checkpoint made after it.
    cp = log.checkpoint().checkpoint
    assert cp.tree_size == 251
    for seq in range(151, 252):
        assert log.prove(seq).verify(cp.root), seq
    with pytest.raises(AuditError, match="not in the log"):
        log.prove(150)
    for first in (150, 214):
        old = next(c.checkpoint for c in log.checkpoints() if c.checkpoint.tree_size == first)
        assert log.prove_consistency(first, 251).verify(old.root, cp.root)
    _assert_ok(log, 101)

    # Nothing else is old enough yet.
    assert log.archive(tmp_path / "archive-none.jsonl", older_than_days=183) is None
    assert not (tmp_path / "archive-none.jsonl").exists()
    assert log.head().seq == 251


def test_archive_twice_chains_the_anchors(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    log = _old_and_new(backend, key, clock)
    assert log.archive(tmp_path / "a1.jsonl", older_than_days=183) is not None
    clock.tick(days=400)
    second_cut = log.checkpoint().checkpoint.tree_size  # 251: everything so far is old
    young = _record_n(log, 5, clock)
    log.checkpoint()

    rec = log.archive(tmp_path / "a2.jsonl", older_than_days=183)

    assert rec is not None
    assert rec.details["through_seq"] == second_cut
    assert rec.seq == young[-1].seq + 1
    exported = verify_export(tmp_path / "a2.jsonl", log.trusted_keys())
    assert exported.ok, exported.detail
    assert exported.checked == second_cut - 150
    assert [e.seq for e in log.store.events()] == [e.seq for e in young] + [rec.seq]
    _assert_ok(log, 6)
    cp = log.checkpoint().checkpoint
    for ev in [*young, rec]:
        assert log.prove(ev.seq).verify(cp.root)


def test_log_verifies_right_after_archiving_through_the_latest_checkpoint(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    """No checkpoint after the cut exists yet (none is due): the log must still verify right
    after the prune, so archive() binds the anchor with a checkpoint after its record."""
    log = _log(backend.store(), key, clock)  # no automatic checkpoints
    _record_n(log, 150, clock)
    log.checkpoint()
    clock.tick(days=200)
    rec = log.archive(tmp_path / "a.jsonl", older_than_days=183)
    assert rec is not None
    assert rec.details["through_seq"] == 150
    _assert_ok(log, 1)
    latest = log.latest_checkpoint()
    assert latest is not None
    assert latest.checkpoint.tree_size == rec.seq
    assert log.prove(rec.seq).verify(latest.checkpoint.root)


def test_archive_refuses_to_cut_below_the_minimum_retention(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    log = _old_and_new(backend, key, clock)
    with pytest.raises(AuditError, match="at least 183 days"):
        log.archive(tmp_path / "a.jsonl", older_than_days=182)
    strict = _log(backend.reopen(), key, clock, min_retention_days=365)
    with pytest.raises(AuditError, match="at least 365 days"):
        strict.archive(tmp_path / "a.jsonl", older_than_days=200)
    # Its own default cut (365 days) is older than every event: nothing to prune.
    assert strict.archive(tmp_path / "a.jsonl") is None
    # Nothing was exported or pruned.
    assert not (tmp_path / "a.jsonl").exists()
    assert log.head().pruned_through == 0
    assert log.head().seq == 250
    # A cut older than any event prunes nothing either.
    assert log.archive(tmp_path / "a.jsonl", older_than_days=365) is None
    assert log.head().seq == 250
    _assert_ok(log, 250)


# -- damage ------------------------------------------------------------------------------


def test_deleting_old_events_by_hand_is_damage(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    store = backend.store()
    log = _log(store, key, clock, every=64)
    _record_n(log, 150, clock)
    backend.delete_events(store, 1, 64)
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.kind) == (1, "deleted")
    assert "1..64" in report.detail


def test_a_forged_prune_without_its_record_is_damage(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    """An intruder deletes checkpointed events and moves the anchor the way ``archive()``
    would, but cannot add the chained ``audit.prune`` record."""
    store = backend.store()
    log = _log(store, key, clock, every=64)
    events = _record_n(log, 150, clock)
    anchor = frontier_at(64, store.perfect)  # the checkpoint at 128 comes after it
    backend.delete_events(store, 1, 64)
    backend.set_head(
        store,
        replace(log.head(), pruned_through=64, anchor_hash=events[63].hash, anchor_frontier=anchor),
    )
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.kind) == (1, "deleted")
    assert "audit.prune" in report.detail


def test_deleting_events_after_an_archive_is_damage(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    store = backend.store()
    log = _old_and_new(backend, key, clock)
    assert log.archive(tmp_path / "a.jsonl", older_than_days=183) is not None
    _assert_ok(log, 101)
    backend.delete_events(store, 160, 162)
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.kind) == (160, "deleted")


def test_event_tuple_follows_the_table_columns() -> None:
    """The driver-level insert binds tuples positionally: their order is the table's."""
    log = AuditLog(MemoryStore("t/log"))
    with request_context(Principal("u-1", roles=("a", "b"))):
        ev = log.record("order.read", "allow", resource=ResourceRef("order", "o-1"))
    bare = log.record("order.read", "allow")
    for e in (ev, bare):
        values = event_values(e)
        assert event_tuple(e) == tuple(values[c.name] for c in event_table.columns)


def test_a_prune_record_no_checkpoint_covers_is_damage(
    backend: Backend, key: SigningKey, clock: Clock
) -> None:
    """With write access but no signing key, an intruder can prune the way ``archive()``
    does, record and all; only the signed checkpoint that ``archive()`` makes after its
    record is out of reach, and the verifier insists on it."""
    store = backend.store()
    log = _log(store, key, clock, every=64)
    _record_n(log, 150, clock)
    pending = log.event("audit.prune", "success", resource=ResourceRef("audit.log", "128"))
    store.prune(128, pending)  # the store's verb: no checkpoint after the record
    report = log.verify()
    assert not report.ok
    assert (report.first_bad_seq, report.kind) == (1, "deleted")
    assert "no signed checkpoint covers the audit.prune record at seq 151" in report.detail
    log.checkpoint()  # what archive() does next, with the key
    assert log.verify().ok


def test_a_second_archive_never_cuts_between_an_anchor_and_its_prune_record(
    backend: Backend, key: SigningKey, clock: Clock, tmp_path: Path
) -> None:
    """151..214 are recorded (and checkpointed) before the first archive's prune record
    (215). Once 214 is old but the record is not, a cut at 214 would leave an export whose
    anchor has no prune record: the second archive waits until it can cut at or after 215."""
    log = _log(backend.store(), key, clock, every=64)
    _record_n(log, 150, clock)
    log.checkpoint()
    clock.tick(days=200)
    _record_n(log, 64, clock)  # 151..214, the checkpoint at 214 comes by itself
    clock.tick(days=50)
    first = log.archive(tmp_path / "a1.jsonl", older_than_days=183)
    assert first is not None and (first.seq, first.details["through_seq"]) == (215, 150)
    clock.tick(days=140)  # 214 is 190 days old, the record at 215 only 140
    assert log.archive(tmp_path / "a2.jsonl", older_than_days=183) is None
    assert not (tmp_path / "a2.jsonl").exists()
    clock.tick(days=50)
    second = log.archive(tmp_path / "a2.jsonl", older_than_days=183)
    assert second is not None and second.details["through_seq"] == 215
    assert verify_export(tmp_path / "a2.jsonl", log.trusted_keys()).ok
    assert log.verify().ok
