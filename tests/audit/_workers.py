"""Worker functions the audit tests start in other processes (``spawn`` needs them importable).

Every worker opens its own engine on the namespace URL and its own :class:`AuditLog`, as a
separate application process would, and loads the signing key from a PEM file.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from riskguard import db
from riskguard.audit import AuditLog, KeyHistory, SqlStore, load_signing_key

LOG_ID = "t/log"
ACTION = "order.read"


def open_log(url: str, key_path: str, *, pool_size: int = 5, every: int = 200) -> AuditLog:
    """A fresh engine and :class:`AuditLog` on ``url`` (what one application process holds)."""
    engine = db.create_engine(url, pool_size=pool_size)
    key = load_signing_key(Path(key_path))
    return AuditLog(
        SqlStore(engine, LOG_ID),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=every,
        checkpoint_every_seconds=0,
    )


def _write_json_atomically(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


# -- concurrency ---------------------------------------------------------------------------


def concurrent_appender(
    url: str,
    key_path: str,
    proc: int,
    threads: int,
    per_thread: int,
    every: int,
    out_path: str,
    ready: MpEvent,
    go: MpEvent,
) -> None:
    """Append ``threads x per_thread`` events from ``threads`` threads, mixing single
    :meth:`AuditLog.record` calls and :meth:`AuditLog.batch` blocks of 5.

    Writes to ``out_path`` a JSON object: ``records`` (one ``[thread, i, seq, id]`` per single
    record, ``seq`` as returned), ``batches`` (one ``[thread, [i...], [id...]]`` per batch, in
    append order) and ``errors`` (tracebacks of threads that failed).
    """
    log = open_log(url, key_path, pool_size=10, every=every)
    log.head()  # creates (or checks) the head row before the race starts
    records: list[list[Any]] = []
    batches: list[list[Any]] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def run(t: int) -> None:
        try:
            barrier.wait(timeout=60)
            go.wait(timeout=60)
            i = 0
            while i < per_thread:
                if i % 10 == 5 and i + 5 <= per_thread:
                    with log.batch() as queue:
                        for j in range(i, i + 5):
                            log.record(ACTION, "allow", details={"p": proc, "t": t, "i": j})
                        ids = [p.id for p in queue]
                    with lock:
                        batches.append([t, list(range(i, i + 5)), ids])
                    i += 5
                else:
                    ev = log.record(ACTION, "allow", details={"p": proc, "t": t, "i": i})
                    with lock:
                        records.append([t, i, getattr(ev, "seq", None), ev.id])
                    i += 1
        except BaseException:
            with lock:
                errors.append(traceback.format_exc())

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    ready.set()
    for w in workers:
        w.join()
    _write_json_atomically(
        Path(out_path), {"records": records, "batches": batches, "errors": errors}
    )
    log.store.engine.dispose()  # type: ignore[attr-defined]


# -- crashes -------------------------------------------------------------------------------


def _report(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())
    os.fsync(fd)


def crash_single_appender(url: str, key_path: str, report_path: str, every: int = 16) -> None:
    """Append single events (checkpointing every ``every``) until killed; after each
    ``record()`` returns, append ``"<seq> <event id>"`` to ``report_path`` and fsync it."""
    log = open_log(url, key_path, every=every)
    fd = os.open(report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while True:
        ev = log.record(ACTION, "allow", details={"n": n})
        _report(fd, f"{getattr(ev, 'seq', None)} {ev.id}")
        n += 1


def crash_batch_appender(
    url: str, key_path: str, report_path: str, size: int, prefix: str = "b"
) -> None:
    """Append batches of ``size`` events (each tagged ``<prefix><n>`` in its details, a
    checkpoint after each) until killed; after each batch is appended, append its tag to
    ``report_path`` and fsync it."""
    log = open_log(url, key_path, every=1)
    fd = os.open(report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while True:
        tag = f"{prefix}{n}"
        with log.batch():
            for j in range(size):
                log.record(ACTION, "allow", details={"tag": tag, "j": j})
        _report(fd, tag)
        n += 1


def stalled_batch_appender(
    url: str, key_path: str, report_path: str, marker_path: str, size: int, good: int, at: str
) -> None:
    """Append ``good`` batches of ``size`` events (reporting each tag, as in
    :func:`crash_batch_appender`), then start one more batch and stop *inside* its
    transaction, right after the statement ``at`` names ran (``"events"``: the events are
    inserted; ``"head"``: the head row is updated, only COMMIT is left). There it writes
    ``marker_path`` and waits to be killed."""
    log = open_log(url, key_path)
    fd = os.open(report_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    prefix = {"events": "INSERT INTO rg_audit_event", "head": "UPDATE rg_audit_head"}[at]
    armed = threading.Event()

    def stall(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if armed.is_set() and statement.lstrip().startswith(prefix):
            mfd = os.open(marker_path, os.O_WRONLY | os.O_CREAT, 0o644)
            _report(mfd, "inside")
            threading.Event().wait()  # until SIGKILL

    sa.event.listen(log.store.engine, "after_cursor_execute", stall)  # type: ignore[attr-defined]
    for n in range(good + 1):
        tag = f"b{n}"
        if n == good:
            armed.set()
        with log.batch():
            for j in range(size):
                log.record(ACTION, "allow", details={"tag": tag, "j": j})
        _report(fd, tag)
