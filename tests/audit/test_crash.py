"""A writer killed with SIGKILL mid-append (SQLite file, PostgreSQL, MariaDB) leaves a log
that verifies and holds every event whose ``record()`` returned, and never part of a batch.

The children report each event (or batch) after ``record()`` (or the batch block) returned,
with ``fsync``, so whatever they reported was committed before the kill.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from riskguard.audit import (
    AuditEvent,
    AuditLog,
    KeyHistory,
    SigningKey,
    SqlStore,
    generate_signing_key,
)
from tests.audit._workers import (
    ACTION,
    LOG_ID,
    crash_batch_appender,
    crash_single_appender,
    stalled_batch_appender,
)
from tests.conftest import SqlNamespace

WAIT_S = 60.0  # bound on every wait for a child
BATCH = 50


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key("test-key")


@pytest.fixture
def key_path(key: SigningKey, tmp_path: Path) -> Path:
    path = tmp_path / f"{key.name}.pem"
    path.write_bytes(key.private_pem())
    return path


def _parent_log(ns: SqlNamespace, key: SigningKey) -> AuditLog:
    return AuditLog(
        SqlStore(ns.engine, LOG_ID),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=0,
        checkpoint_every_seconds=0,
    )


def _start(target: Callable[..., None], *args: Any) -> BaseProcess:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _lines(path: Path) -> list[str]:
    """The complete lines of a report file (a line cut by the kill is not reported)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1]


def _wait_for(path: Path, n: int, proc: BaseProcess) -> None:
    """Wait (bounded) until ``path`` holds ``n`` complete lines."""
    deadline = time.monotonic() + WAIT_S
    while len(_lines(path)) < n:
        assert proc.is_alive(), f"the child died early (exit code {proc.exitcode})"
        assert time.monotonic() < deadline, f"the child reported {len(_lines(path))}/{n} lines"
        time.sleep(0.02)


def _kill(proc: BaseProcess) -> None:
    assert proc.is_alive()
    proc.kill()  # SIGKILL: no cleanup, no rollback by the client
    proc.join(WAIT_S)
    assert proc.exitcode == -signal.SIGKILL


def _assert_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok, report.detail
    assert report.checked == log.head().seq


def _tag_counts(log: AuditLog) -> tuple[Counter[str], dict[str, list[AuditEvent]]]:
    by_tag: dict[str, list[AuditEvent]] = {}
    for ev in log.store.events():
        by_tag.setdefault(ev.details["tag"], []).append(ev)
    return Counter({t: len(v) for t, v in by_tag.items()}), by_tag


def _assert_batches_whole(log: AuditLog, reported: list[str]) -> None:
    counts, by_tag = _tag_counts(log)
    # No partial batch: every tag in the log appears exactly BATCH times, as one run of seq.
    assert set(counts.values()) <= {BATCH}, counts
    for tag, evs in by_tag.items():
        seqs = [e.seq for e in evs]
        assert seqs == list(range(seqs[0], seqs[0] + BATCH)), tag
        assert [e.details["j"] for e in evs] == list(range(BATCH)), tag
    # Every batch whose block returned is there.
    assert set(reported) <= set(counts)


def test_sigkill_single_appender_loses_nothing_it_returned(
    sql_schema: SqlNamespace, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    log = _parent_log(sql_schema, key)
    # Three writers in turn, each killed while appending flat out: each must also be able
    # to go on from whatever the previous one left (its locks died with it).
    for rnd in range(3):
        start = log.head().seq
        report = tmp_path / f"single-{rnd}.txt"
        proc = _start(crash_single_appender, sql_schema.url, str(key_path), str(report))
        _wait_for(report, 40, proc)
        _kill(proc)

        _assert_verifies(log)
        pairs = [line.split() for line in _lines(report)]
        seqs = [int(s) for s, _ in pairs]
        assert seqs == list(range(start + 1, start + 1 + len(seqs)))
        events = {ev.seq: ev for ev in log.store.events(after=start)}
        for seq, event_id in pairs:
            assert events[int(seq)].id == event_id
            assert events[int(seq)].action == ACTION
        # At most the one event whose record() had committed but not yet been reported.
        assert log.head().seq - seqs[-1] in (0, 1)
    # The checkpoints the children made (every 16 events) are intact too.
    assert len(log.checkpoints()) >= 3
    root = log.checkpoint().checkpoint.root
    assert all(log.prove(s).verify(root) for s in (1, log.head().seq))


def test_sigkill_batch_appender_leaves_no_partial_batch(
    sql_schema: SqlNamespace, key: SigningKey, key_path: Path, tmp_path: Path
) -> None:
    log = _parent_log(sql_schema, key)
    reported: list[str] = []
    for rnd in range(3):
        start = log.head().seq
        report = tmp_path / f"batch-{rnd}.txt"
        proc = _start(
            crash_batch_appender, sql_schema.url, str(key_path), str(report), BATCH, f"r{rnd}b"
        )
        _wait_for(report, 4, proc)
        _kill(proc)

        _assert_verifies(log)
        got = _lines(report)
        reported += got
        _assert_batches_whole(log, reported)
        assert log.head().seq - start - BATCH * len(got) in (0, BATCH)
    assert len(log.checkpoints()) >= len(reported)


@pytest.mark.parametrize("at", ["events", "head"])
def test_sigkill_inside_the_append_transaction_rolls_the_batch_back(
    sql_schema: SqlNamespace, key: SigningKey, key_path: Path, tmp_path: Path, at: str
) -> None:
    """The child stops inside its 4th batch's transaction — after inserting the events, or
    after updating the head row too (only COMMIT left) — and is killed there."""
    log = _parent_log(sql_schema, key)
    report, marker = tmp_path / "report.txt", tmp_path / "inside.txt"
    proc = _start(
        stalled_batch_appender, sql_schema.url, str(key_path), str(report), str(marker),
        BATCH, 3, at,
    )  # fmt: skip
    _wait_for(marker, 1, proc)
    _kill(proc)

    assert _lines(report) == ["b0", "b1", "b2"]
    counts, _ = _tag_counts(log)
    assert counts == {"b0": BATCH, "b1": BATCH, "b2": BATCH}  # nothing of b3
    assert log.head().seq == 3 * BATCH
    _assert_verifies(log)

    # The dead writer's head lock went with it: the next batch lands right after b2.
    appended: list[list[AuditEvent]] = []

    def append_next() -> None:
        appended.append(
            log.append([log.event(ACTION, "allow", details={"tag": "after", "j": j})
                        for j in range(BATCH)])
        )  # fmt: skip

    t = threading.Thread(target=append_next, daemon=True)
    t.start()
    t.join(WAIT_S)
    assert not t.is_alive(), "the killed writer's lock on the audit head was never released"
    assert [e.seq for e in appended[0]] == list(range(3 * BATCH + 1, 4 * BATCH + 1))
    _assert_verifies(log)
    cp = log.checkpoint().checkpoint
    assert cp.tree_size == 4 * BATCH
    assert log.prove(3 * BATCH + 1).verify(cp.root)
