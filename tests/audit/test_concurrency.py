"""Many writers, one chain: 8 threads in each of 4 processes append to the same log at once
(SQLite file, PostgreSQL, MariaDB); the result is one gap-free chain that verifies."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from riskguard.audit import (
    AuditEvent,
    AuditLog,
    KeyHistory,
    MemoryStore,
    SigningKey,
    SqlStore,
    generate_signing_key,
)
from riskguard.audit._sql import event_table
from tests.audit._workers import ACTION, LOG_ID, concurrent_appender
from tests.conftest import SqlNamespace

PROCS = 4
THREADS = 8
PER_THREAD = 25  # 15 single records and 2 batches of 5 per thread
EVERY = 100  # checkpoint every 100 events, so checkpoints race with appends too
N = PROCS * THREADS * PER_THREAD
JOIN_TIMEOUT_S = 120


def _run_workers(ns: SqlNamespace, key: SigningKey, tmp_path: Path) -> list[dict[str, Any]]:
    key_path = tmp_path / f"{key.name}.pem"
    key_path.write_bytes(key.private_pem())
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(PROCS)]
    outs = [tmp_path / f"proc{p}.json" for p in range(PROCS)]
    procs = [
        ctx.Process(
            target=concurrent_appender,
            args=(
                ns.url,
                str(key_path),
                p,
                THREADS,
                PER_THREAD,
                EVERY,
                str(outs[p]),
                readies[p],
                go,
            ),
        )
        for p in range(PROCS)
    ]
    for proc in procs:
        proc.start()
    try:
        # Start every thread of every process at once, after the slow spawn start-up.
        for ready in readies:
            assert ready.wait(JOIN_TIMEOUT_S), "a worker process did not start"
        go.set()
        for proc in procs:
            proc.join(JOIN_TIMEOUT_S)
            assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    results = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    errors = [e for r in results for e in r["errors"]]
    assert not errors, "worker threads failed:\n" + "\n".join(errors)
    return results


def test_threads_in_processes_append_one_gap_free_chain(
    sql_schema: SqlNamespace, tmp_path: Path
) -> None:
    key = generate_signing_key("test-key")
    results = _run_workers(sql_schema, key, tmp_path)

    # One chain, seq 1..N without gaps or duplicates.
    e = event_table.c
    with sql_schema.engine.connect() as conn:
        count, lo, hi, ids = conn.execute(
            sa.select(
                sa.func.count(), sa.func.min(e.seq), sa.func.max(e.seq),
                sa.func.count(sa.distinct(e.event_id)),
            )
        ).one()  # fmt: skip
    assert (count, lo, hi, ids) == (N, 1, N, N)
    log = AuditLog(
        SqlStore(sql_schema.engine, LOG_ID),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=0,
        checkpoint_every_seconds=0,
    )
    assert log.head().seq == N
    events = {ev.seq: ev for ev in log.store.events()}
    assert sorted(events) == list(range(1, N + 1))
    by_id = {ev.id: ev for ev in events.values()}

    report = log.verify()
    assert report.ok, report.detail
    assert report.checked == N

    # Checkpoints were made while the appends raced, and each one is right.
    cps = log.checkpoints()
    assert len(cps) >= 2
    assert cps[-1].checkpoint.tree_size > N - EVERY
    for cp in cps:
        c = cp.checkpoint
        assert cp.verify(log.trusted_keys() or []) == ["test-key"]
        assert c.origin == LOG_ID
        assert c.root == log.root(c.tree_size)
        assert c.head_hash == events[c.tree_size].hash
    for a, b in itertools.pairwise(cps):
        proof = log.prove_consistency(a.checkpoint.tree_size, b.checkpoint.tree_size)
        assert proof.verify(a.checkpoint.root, b.checkpoint.root)

    # Every event a worker was told it got is in the log, at its seq, with its details.
    seen: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # (p, t) -> (i, seq)
    for p, res in enumerate(results):
        for t, i, seq, event_id in res["records"]:
            ev = events[seq]
            assert ev.id == event_id
            assert (ev.action, ev.outcome) == (ACTION, "allow")
            assert ev.details == {"p": p, "t": t, "i": i}
            seen[(p, t)].append((i, seq))
        for t, idx, batch_ids in res["batches"]:
            seqs = [by_id[i].seq for i in batch_ids]
            # A batch is one transaction: its events are consecutive, in recording order.
            assert seqs == list(range(seqs[0], seqs[0] + len(idx)))
            for i, event_id in zip(idx, batch_ids, strict=True):
                assert by_id[event_id].details == {"p": p, "t": t, "i": i}
                seen[(p, t)].append((i, by_id[event_id].seq))
    # The processes really did append at the same time: their runs of seq interleave.
    spans = {p: [s for (q, _), v in seen.items() if q == p for _, s in v] for p in range(PROCS)}
    for p in range(PROCS):
        for q in range(PROCS):
            if p != q:
                assert min(spans[p]) < max(spans[q])
    # ...and nothing else is: the workers account for all N events, each exactly once.
    assert sum(len(v) for v in seen.values()) == N
    assert set(seen) == {(p, t) for p in range(PROCS) for t in range(THREADS)}
    for got in seen.values():
        got.sort()
        assert [i for i, _ in got] == list(range(PER_THREAD))
        # Each thread waited for its append to commit before the next: its seqs increase.
        assert [s for _, s in got] == sorted(s for _, s in got)

    # Inclusion proofs for the workers' events hold against a checkpoint of the whole log.
    root = log.checkpoint().checkpoint.root
    for seq in [1, N, *range(3, N, 37)]:
        assert log.prove(seq).verify(root)


def test_threads_share_a_memory_store() -> None:
    key = generate_signing_key("test-key")
    log = AuditLog(
        MemoryStore(LOG_ID),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=EVERY,
        checkpoint_every_seconds=0,
    )
    got: list[AuditEvent] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def run(t: int) -> None:
        barrier.wait(timeout=30)
        for i in range(PER_THREAD * 2):
            ev = log.record(ACTION, "allow", details={"t": t, "i": i})
            assert isinstance(ev, AuditEvent)
            with lock:
                got.append(ev)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    total = THREADS * PER_THREAD * 2
    assert sorted(ev.seq for ev in got) == list(range(1, total + 1))
    assert [ev.id for ev in log.store.events()] == [
        ev.id for ev in sorted(got, key=lambda e: e.seq)
    ]
    report = log.verify()
    assert report.ok, report.detail
    assert report.checked == total
    assert log.checkpoints()[-1].checkpoint.tree_size > total - EVERY
