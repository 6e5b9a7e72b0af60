"""Benchmarks for ``riskguard.audit`` against plain baselines, measured in one run.

::

    python benchmarks/audit_bench.py [--events N] [--verify-events N] [--skip-postgres]

1. append, batches of 100, SQLite file: ``AuditLog.append`` (and ``batch()`` + ``record()``)
   vs a plain SQLAlchemy Core insert of the very rows riskguard writes, without hashing.
2. offline verification of an export file (1M events by default): ``verify_export`` vs raw
   chained ``hashlib.sha256`` over the same canonical bytes (already in memory), and vs
   reading the file and hashing; plus the peak memory of verification.
3. append from several processes on PostgreSQL (fresh schema, dropped afterwards), then
   ``AuditLog.verify()`` and a gap-free ``seq`` check.
4. inclusion proofs: ``prove``/``verify`` on the SQLite log, and the proof size and verify
   time for a 10-million-event tree.

The figures are printed, never asserted: the goals come from the issue.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import multiprocessing as mp
import os
import queue
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from _pg import private_schema
from rich.console import Console
from rich.table import Table

from riskguard import db
from riskguard.audit import (
    AuditLog,
    InclusionProof,
    KeyHistory,
    MemoryStore,
    SigningKey,
    SqlStore,
    TrustedKey,
    generate_signing_key,
    leaf_hash,
    load_signing_key,
    verify_export,
    verify_inclusion,
)
from riskguard.audit._merkle import inclusion_proof, mth, node_hash
from riskguard.audit._sql import event_table, event_values

# Piped output gets a fixed width so the summary table stays on one line per row.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)

LOG_ID = "bench/log"
ACTION = "coupon.redeem"
DEFAULT_PG_URL = os.environ.get(
    "RISKGUARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# An export event line: b'{"event":' + canonical + b',"hash":"' + 64 hex + b'"}' + b"\n".
_EVENT_PREFIX = b'{"event":'
_LINE_SUFFIX = len(b',"hash":"') + 64 + len(b'"}') + 1


@dataclass
class Result:
    """One row of the summary table."""

    name: str
    riskguard: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} ev/s"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):,.1f} MiB"


def _peak_rss_bytes() -> int:
    """This process's peak RSS. On Linux ``VmHWM`` (reset by exec), not ``ru_maxrss``, which
    survives exec and so would report the parent's peak in a freshly spawned child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if sys.platform == "darwin" else rss * 1024


def _log(store: Any, key: SigningKey | None, every: int) -> AuditLog:
    keys = KeyHistory(signing=[key]) if key is not None else None
    return AuditLog(store, keys=keys, checkpoint_every_events=every, checkpoint_every_seconds=0)


# -- 1. append on SQLite ----------------------------------------------------------------


def bench_append_sqlite(
    tmp: Path, n: int, batch: int, key: SigningKey
) -> tuple[list[Result], AuditLog]:
    console.rule(f"1. append, batches of {batch}, SQLite file ({n:,} events)")
    rg_engine = db.create_engine(f"sqlite:///{tmp / 'riskguard.db'}")
    db.create_schema(rg_engine)
    log = _log(SqlStore(rg_engine, LOG_ID), key, 1000)

    # The same pending events feed both sides; sealing them in a MemoryStore gives exactly
    # the rows (seq, prev_hash, hash) that the SqlStore will write.
    pending = [log.event(ACTION, "success", details={"i": i}) for i in range(n)]
    batches = [pending[i : i + batch] for i in range(0, n, batch)]
    mem = MemoryStore(LOG_ID)
    rows_batches = [[event_values(ev) for ev in mem.append(b)[0]] for b in batches]

    plain_engine = db.create_engine(f"sqlite:///{tmp / 'plain.db'}")
    event_table.create(plain_engine)  # same table, same indexes, same pragmas

    # Interleave the two so that drift (disk, other processes) hits both alike.
    rg_s = plain_s = 0.0
    insert = event_table.insert()
    for b, rows in zip(batches, rows_batches, strict=True):
        t0 = time.perf_counter()
        log.append(b)
        t1 = time.perf_counter()
        with plain_engine.begin() as conn:
            conn.execute(insert, rows)
        t2 = time.perf_counter()
        rg_s += t1 - t0
        plain_s += t2 - t1
    same = log.head().hash == mem.head().hash
    cps = len(log.checkpoints())
    console.print(
        f"riskguard AuditLog.append : {_rate(n, rg_s)}  ({rg_s:.2f} s, {cps} checkpoints)"
    )
    console.print(f"plain Core insert         : {_rate(n, plain_s)}  ({plain_s:.2f} s)")
    console.print(f"ratio (time)              : {rg_s / plain_s:.2f}x   goal <= 1.3x")
    console.print(f"both wrote the same chain : {same}")

    # End to end as an application writes: batch() + record() builds and validates each event.
    rec_engine = db.create_engine(f"sqlite:///{tmp / 'record.db'}")
    db.create_schema(rec_engine)
    rec_log = _log(SqlStore(rec_engine, LOG_ID), key, 1000)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        with rec_log.batch():
            for i in range(start, min(start + batch, n)):
                rec_log.record(ACTION, "success", details={"i": i})
    rec_s = time.perf_counter() - t0
    console.print(
        f"riskguard batch()+record(): {_rate(n, rec_s)}  ({rec_s:.2f} s, includes building "
        f"each event) = {rec_s / plain_s:.2f}x the plain insert"
    )
    rec_engine.dispose()
    plain_engine.dispose()
    return [
        Result(f"SQLite append(), batch {batch}", _rate(n, rg_s),
               f"{_rate(n, plain_s)} Core insert", rg_s / plain_s, "<= 1.3x",
               rg_s / plain_s <= 1.3),
        Result(f"SQLite batch()+record(), batch {batch}", _rate(n, rec_s),
               f"{_rate(n, plain_s)} Core insert", rec_s / plain_s, "(info)", None),
    ], log  # fmt: skip


# -- 2. offline verification of an export ---------------------------------------------


def build_export(path: Path, n: int, key: SigningKey) -> None:
    t0 = time.perf_counter()
    log = _log(MemoryStore(LOG_ID), key, 10_000)
    for start in range(0, n, 1000):
        log.append(
            [
                log.event(ACTION, "success", details={"i": i})
                for i in range(start, min(n, start + 1000))
            ]
        )
    t1 = time.perf_counter()
    written = log.export(path)
    t2 = time.perf_counter()
    console.print(
        f"built {written:,} events in {t1 - t0:.1f} s, exported in {t2 - t1:.1f} s "
        f"({_mib(path.stat().st_size)}, {len(log.checkpoints())} checkpoints)"
    )


def _event_lines(f: Any) -> Any:
    for line in f:
        if line.startswith(_EVENT_PREFIX):
            yield line


def _hash_chain(canon: list[bytes]) -> bytes:
    sha = hashlib.sha256
    prev = bytes(32)
    for c in canon:
        prev = sha(prev + c).digest()
    return prev


def _read_and_hash(path: Path) -> tuple[int, bytes]:
    sha = hashlib.sha256
    prev = bytes(32)
    n = 0
    with open(path, "rb") as f:
        for line in _event_lines(f):
            prev = sha(prev + line[9:-_LINE_SUFFIX]).digest()
            n += 1
    return n, prev


def _verify_child(path: str, verifier_key: str, out: Any) -> None:
    """Runs in a fresh (spawned) interpreter so that its peak RSS is verification's own."""
    trusted = [TrustedKey.from_verifier_key(verifier_key)]
    gc.collect()
    rss0 = _peak_rss_bytes()
    t0 = time.perf_counter()
    report = verify_export(Path(path), trusted)
    verify_s = time.perf_counter() - t0
    rss1 = _peak_rss_bytes()

    # A second, untimed pass under tracemalloc: the peak of Python allocations while verifying.
    tracemalloc.start()
    traced_ok = verify_export(Path(path), trusted).ok
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    t0 = time.perf_counter()
    n_read, last_read = _read_and_hash(Path(path))
    read_hash_s = time.perf_counter() - t0

    with open(path, "rb") as f:
        canon = [line[9:-_LINE_SUFFIX] for line in _event_lines(f)]
        f.seek(0)
        last_hash = b""
        for line in _event_lines(f):
            last_hash = line[-_LINE_SUFFIX + 9 : -3]
    t0 = time.perf_counter()
    last_raw = _hash_chain(canon)
    raw_s = time.perf_counter() - t0
    out.put({
        "ok": report.ok, "checked": report.checked, "detail": report.detail,
        "checkpoints": report.checkpoints, "verify_s": verify_s, "rss0": rss0, "rss1": rss1,
        "traced_peak": traced_peak, "traced_ok": traced_ok,
        "read_hash_s": read_hash_s, "raw_s": raw_s, "n_canon": len(canon), "n_read": n_read,
        "chain_matches": last_raw.hex() == last_hash.decode() == last_read.hex(),
    })  # fmt: skip


def bench_verify_export(tmp: Path, n: int, key: SigningKey) -> list[Result]:
    console.rule(f"2. verify an export of {n:,} events")
    path = tmp / "export.jsonl"
    build_export(path, n, key)
    gc.collect()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_verify_child, args=(str(path), key.trusted().verifier_key(), out))
    proc.start()
    try:
        r = out.get(timeout=1800)
    except queue.Empty:
        raise RuntimeError(f"the verifying process died (exit code {proc.exitcode})") from None
    proc.join()
    size = path.stat().st_size
    path.unlink()
    grow = r["rss1"] - r["rss0"]
    console.print(f"verify_export            : {r['verify_s']:.2f} s  ({_rate(n, r['verify_s'])})"
                  f"  ok={r['ok']} checked={r['checked']:,} — {r['detail']}")  # fmt: skip
    console.print(f"raw chained sha256       : {r['raw_s']:.2f} s  ({_rate(n, r['raw_s'])}) over "
                  f"{r['n_canon']:,} canonical byte strings already in memory")  # fmt: skip
    console.print(f"read file + chained hash : {r['read_hash_s']:.2f} s  "
                  f"({_rate(n, r['read_hash_s'])})")  # fmt: skip
    console.print(f"baselines reproduce the export's last hash: {r['chain_matches']}")
    console.print(f"ratio vs raw hashing     : {r['verify_s'] / r['raw_s']:.2f}x   goal <= 2x")
    console.print(f"ratio vs read + hash     : {r['verify_s'] / r['read_hash_s']:.2f}x")
    console.print(f"peak RSS of the verifying process: {_mib(r['rss0'])} after imports, "
                  f"{_mib(r['rss1'])} after verify_export (+{_mib(grow)}) for a "
                  f"{_mib(size)} file")  # fmt: skip
    console.print(f"tracemalloc peak during a second verify_export pass: "
                  f"{r['traced_peak'] / 1024:,.0f} KiB (ok={r['traced_ok']})")  # fmt: skip
    ok = r["ok"] and r["checked"] == n
    return [
        Result(f"verify_export {n:,} vs raw sha256", f"{r['verify_s']:.2f} s",
               f"{r['raw_s']:.2f} s", r["verify_s"] / r["raw_s"], "<= 2x",
               ok and r["verify_s"] / r["raw_s"] <= 2),
        Result(f"verify_export {n:,} vs read+hash", f"{r['verify_s']:.2f} s",
               f"{r['read_hash_s']:.2f} s", r["verify_s"] / r["read_hash_s"], "(info) <= 2x",
               ok and r["verify_s"] / r["read_hash_s"] <= 2),
        Result("verify_export peak RSS growth", f"+{_mib(grow)}", f"file {_mib(size)}",
               grow / size, "flat (streams)", grow < size / 10),
        Result("verify_export tracemalloc peak", f"{r['traced_peak'] / 1024:,.0f} KiB",
               f"file {_mib(size)}", r["traced_peak"] / size, "flat (streams)",
               r["traced_ok"] and r["traced_peak"] < size / 10),
    ]  # fmt: skip


# -- 3. several processes on PostgreSQL -------------------------------------------------


def _pg_worker(
    url: str, key_path: str, wid: int, n: int, batch: int, barrier: Any, out: Any
) -> None:
    try:
        engine = db.create_engine(url)
        key = load_signing_key(Path(key_path), "bench-key")
        log = _log(SqlStore(engine, LOG_ID), key, 1000)
        log.head()  # connect and create (or find) the head row before the clock starts
        barrier.wait()
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            with log.batch():
                for i in range(start, min(n, start + batch)):
                    log.record(ACTION, "success", details={"w": wid, "i": i})
        t1 = time.perf_counter()
        engine.dispose()
        out.put((wid, t0, t1, None))
    except Exception as exc:  # reported by the parent
        barrier.abort()
        out.put((wid, 0.0, 0.0, f"{type(exc).__name__}: {exc}"))


def bench_postgres(
    tmp: Path, pg_url: str, procs: int, per_proc: int, batch: int, key: SigningKey
) -> list[Result]:
    total = procs * per_proc
    console.rule(f"3. append from {procs} processes on PostgreSQL ({procs} x {per_proc:,} events)")
    with private_schema(pg_url, console) as url:
        if url is None:
            return [Result(f"PostgreSQL {procs} procs", "skipped", "-", None, "-", None)]
        engine = db.create_engine(url)
        try:
            db.create_schema(engine)
            key_path = tmp / "bench-key.pem"
            key_path.write_bytes(key.private_pem())
            key_path.chmod(0o600)
            ctx = mp.get_context("spawn")
            barrier = ctx.Barrier(procs)
            out = ctx.Queue()
            workers = [
                ctx.Process(
                    target=_pg_worker, args=(url, str(key_path), w, per_proc, batch, barrier, out)
                )
                for w in range(procs)
            ]
            for p in workers:
                p.start()
            got = [out.get(timeout=600) for _ in workers]
            for p in workers:
                p.join()
            errors = [f"worker {w}: {e}" for w, _, _, e in got if e]
            for e in errors:
                console.print(f"[red]{e}")
            if errors:
                return [Result(f"PostgreSQL {procs} procs", "failed", "-", None,
                               "one gap-free chain", False)]  # fmt: skip
            wall = max(t1 for _, _, t1, _ in got) - min(t0 for _, t0, _, _ in got)
            console.print(f"{total:,} events in {wall:.2f} s: {_rate(total, wall)} in total")
            for w, t0, t1, _ in sorted(got):
                if t1 > t0:
                    console.print(f"  worker {w}: {_rate(per_proc, t1 - t0)}")

            log = _log(SqlStore(engine, LOG_ID), key, 1000)
            t0 = time.perf_counter()
            report = log.verify()
            verify_s = time.perf_counter() - t0
            with engine.connect() as conn:
                count, lo, hi = conn.exec_driver_sql(
                    "SELECT count(*), min(seq), max(seq) FROM rg_audit_event"
                ).one()
            head = log.head()
            gap_free = count == total and lo == 1 and hi == total and head.seq == total
            console.print(f"log.verify(): ok={report.ok} checked={report.checked:,} in "
                          f"{verify_s:.2f} s — {report.detail}")  # fmt: skip
            console.print(f"rows: count={count:,} min(seq)={lo} max(seq)={hi} head.seq={head.seq}"
                          f" -> one gap-free chain 1..{total:,}: {gap_free}")  # fmt: skip
            one_chain = report.ok and report.checked == total and gap_free and not errors
            return [
                Result(f"PostgreSQL {procs} procs, batch {batch}",
                       _rate(total, wall), "-", None, "one gap-free chain", one_chain),
            ]  # fmt: skip
        finally:
            engine.dispose()


# -- 4. inclusion proofs ----------------------------------------------------------------


def _per_call(fn: Any, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _fake_tree(size: int, target: int, event_hash: bytes) -> Any:
    """``perfect(level, index)`` for a tree of ``size`` leaves that is never built: every
    subtree is ``sha256(f"{level}:{index}")`` except those holding leaf ``target``, which are
    hashed from their children (down to ``leaf_hash(event_hash)``) so that proofs verify."""

    @cache
    def perfect(level: int, index: int) -> bytes:
        if level == 0 and index == target:
            return leaf_hash(event_hash)
        if level > 0 and index << level <= target < (index + 1) << level:
            return node_hash(perfect(level - 1, 2 * index), perfect(level - 1, 2 * index + 1))
        return hashlib.sha256(f"{level}:{index}".encode()).digest()

    assert size > target
    return perfect


def bench_proofs(log: AuditLog, key: SigningKey, reps: int = 200) -> list[Result]:
    console.rule("4. inclusion proofs")
    signed = log.checkpoint()
    signed.verify([key.trusted()])
    size = signed.checkpoint.tree_size
    root = signed.checkpoint.root
    rng = random.Random(1)
    seqs = [rng.randint(1, size) for _ in range(reps)]
    prove_t, verify_t, sizes, ok = [], [], [], True
    for s in seqs:
        t0 = time.perf_counter()
        proof = log.prove(s)
        t1 = time.perf_counter()
        good = proof.verify(root)
        t2 = time.perf_counter()
        prove_t.append(t1 - t0)
        verify_t.append(t2 - t1)
        sizes.append(len(proof.to_bytes()))
        ok = ok and good
    console.print(
        f"SQLite log of {size:,} events, {reps} random seqs: prove median "
        f"{statistics.median(prove_t) * 1e3:.2f} ms (max {max(prove_t) * 1e3:.2f} ms), verify "
        f"median {statistics.median(verify_t) * 1e6:.1f} µs, size {min(sizes)}..{max(sizes)} B, "
        f"all verify: {ok}"
    )

    big = 10_000_000
    big_sizes = {}
    all_big_ok = True
    for target in (0, big // 2, big - 1):
        event_hash = hashlib.sha256(b"event %d" % target).digest()
        perfect = _fake_tree(big, target, event_hash)
        path = inclusion_proof(target, big, perfect)
        big_root = mth(0, big, perfect)
        proof = InclusionProof(target + 1, big, event_hash, tuple(path))
        all_big_ok = all_big_ok and proof.verify(big_root)
        all_big_ok = all_big_ok and InclusionProof.from_bytes(proof.to_bytes()) == proof
        args = (leaf_hash(event_hash), target, big, list(path), big_root)
        us = _per_call(lambda a=args: verify_inclusion(*a), 5000) * 1e6
        big_sizes[target + 1] = (len(path), len(proof.to_bytes()), us)
    worst = max(nbytes for _, nbytes, _ in big_sizes.values())
    verify_us = max(us for _, _, us in big_sizes.values())
    hashes_bound = math.ceil(math.log2(big))
    for seq, (hashes, nbytes, us) in big_sizes.items():
        console.print(f"10M tree, seq {seq:>10,}: {hashes} hashes, {nbytes} B, "
                      f"verify_inclusion {us:.1f} µs")  # fmt: skip
    console.print(f"ceil(log2(10M)) = {hashes_bound} hashes -> at most "
                  f"{49 + 32 * hashes_bound} B; all verify: {all_big_ok}")  # fmt: skip
    return [
        Result(f"prove/verify, {size:,}-ev SQLite log", f"prove "
               f"{statistics.median(prove_t) * 1e3:.2f} ms, verify "
               f"{statistics.median(verify_t) * 1e6:.0f} µs", f"{max(sizes)} B", None,
               "(info)", ok),
        Result("proof size, 10M events (worst)", f"{worst} B", "1024 B",
               worst / 1024, "< 1 KiB", worst < 1024 and all_big_ok),
        Result("proof verify, 10M events", f"{verify_us:.1f} µs", "1000 µs",
               verify_us / 1000, "< 1 ms", verify_us < 1000 and all_big_ok),
    ]  # fmt: skip


# -- main -------------------------------------------------------------------------------


def summary(results: list[Result]) -> None:
    table = Table(title="riskguard.audit benchmarks")
    for col in ("name", "riskguard", "baseline", "ratio", "goal", "met"):
        table.add_column(col, justify="right" if col == "ratio" else "left", no_wrap=True)
    for r in results:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = "-" if r.met is None else ("[green]yes" if r.met else "[red]no")
        table.add_row(r.name, r.riskguard, r.baseline, ratio, r.goal, met)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="events for the SQLite append")
    ap.add_argument("--verify-events", type=int, default=1_000_000, help="events in the export")
    ap.add_argument("--batch", type=int, default=100, help="events per append batch")
    ap.add_argument("--skip-postgres", action="store_true", help="skip the PostgreSQL run")
    ap.add_argument("--postgres-url", default=DEFAULT_PG_URL)
    ap.add_argument("--procs", type=int, default=4, help="PostgreSQL writer processes")
    ap.add_argument("--per-proc", type=int, default=5000, help="events per PostgreSQL writer")
    args = ap.parse_args(argv)

    console.print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {sys.platform}")
    started = time.perf_counter()
    key = generate_signing_key("bench-key")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="rgbench-") as d:
        tmp = Path(d)
        rows, sqlite_log = bench_append_sqlite(tmp, args.events, args.batch, key)
        results += rows
        results += bench_verify_export(tmp, args.verify_events, key)
        if args.skip_postgres:
            console.rule("3. PostgreSQL")
            console.print("[yellow]skipped (--skip-postgres)")
            results.append(
                Result(f"PostgreSQL {args.procs} procs", "skipped", "-", None, "-", None)
            )
        else:
            results += bench_postgres(
                tmp, args.postgres_url, args.procs, args.per_proc, args.batch, key
            )
        results += bench_proofs(sqlite_log, key)
        assert isinstance(sqlite_log.store, SqlStore)
        sqlite_log.store.engine.dispose()
    summary(results)
    console.print(f"total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
