"""Benchmarks for ``riskguard.crypto`` against plain baselines, measured in one run.

::

    python benchmarks/crypto_bench.py [--iterations 100000] [--repeats 5] [--orm-rows 20000]
                                      [--rows 1000000] [--batch 1000] [--skip-postgres]
                                      [--postgres-url URL]

1. encrypt + decrypt of a 13-byte phone through ``EncryptedString`` (``process_bind_param``
   then ``process_result_value``; text/base64url and ``binary=True`` columns) and through
   ``FieldKey.encrypt``/``decrypt``, vs a raw ``cryptography`` ``AESGCM`` encrypt + decrypt
   of the same bytes with a fresh ``os.urandom(12)`` nonce each time.
2. vs sqlalchemy-utils ``StringEncryptedType(sa.Unicode, key, AesGcmEngine)``: (a) the same
   round trip through each type, (b) an ORM insert + select of N rows of the same model on
   in-memory SQLite (and a plain ``String`` column for reference).
3. ``BlindIndex.compute_normalised`` vs ``hmac.digest(key, msg, "sha256")`` on the same
   normalised bytes; ``compute`` on raw spellings (with normalisation) for information.
4. ``rewrap_column`` of N rows (per-row-bound ``EncryptedString``, integer key) after a
   rotation, on a SQLite file and on PostgreSQL (private schema, dropped afterwards), vs a
   plain keyset-paginated SELECT + executemany UPDATE of a copy of the same rows, same batch
   size, no crypto.

Small loops take the best of ``--repeats`` runs after a warm-up, the contenders interleaved
so that drift (other processes) hits all alike. The figures are printed, never asserted:
the goals come from the issue.
"""

from __future__ import annotations

import argparse
import hmac
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography
import sqlalchemy as sa
from _pg import private_schema
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from riskguard import db
from riskguard.crypto import (
    EncryptedString,
    FieldCrypto,
    Keyring,
    MemoryKeyProvider,
    rewrap_column,
    versions_in_use,
)

with warnings.catch_warnings():  # sqlalchemy-utils may warn on import: silence it here only
    warnings.simplefilter("ignore")
    import sqlalchemy_utils
    from sqlalchemy_utils.types.encrypted.encrypted_type import (
        AesGcmEngine,
        StringEncryptedType,
    )

# Piped output gets a fixed width so the summary table stays on one line per row.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 150)

DEFAULT_PG_URL = os.environ.get(
    "RISKGUARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PHONE = "8613800138000"  # 13 bytes
PHONE_BYTES = PHONE.encode()
CANONICAL = "+8613800138000"  # the phone normaliser's E.164 form
SPELLINGS = ["13800138000", "+8613800138000", "+86 138-0013-8000", "0086 138 0013 8000"]
LOAD_CHUNK = 10_000  # rows prepared, then inserted in one transaction


@dataclass
class Result:
    """One row of the summary table."""

    name: str
    riskguard: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


def _rate(n: int, seconds: float, unit: str = "ops/s") -> str:
    return f"{n / seconds:,.0f} {unit}"


def _phone(i: int) -> str:
    return f"86{130 + i % 60}{i:08d}"  # 13 digits, distinct per i < 10**8


def best_of(loops: dict[str, Callable[[int], float]], n: int, repeats: int) -> dict[str, float]:
    """Best seconds per loop for ``n`` iterations: one warm-up each, then ``repeats`` rounds
    with the loops interleaved. A loop runs ``n`` iterations and returns its own time."""
    for fn in loops.values():
        fn(min(n, 5000))
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, fn in loops.items():
            best[name] = min(best[name], fn(n))
    return best


def _ratio_result(
    name: str, n: int, rg_s: float, base_s: float, base: str, goal: float | None, unit: str
) -> Result:
    ratio = base_s / rg_s  # throughput ratio: riskguard ops/s over baseline ops/s
    return Result(
        name,
        _rate(n, rg_s, unit),
        f"{_rate(n, base_s, unit)} {base}",
        ratio,
        "(info)" if goal is None else f"≥ {goal:g}x",
        None if goal is None else ratio >= goal,
    )


# -- 1. the column type and the field key vs raw AES-GCM ---------------------------------


def _round_trip_loop(bind: Any, result: Any, dialect: sa.Dialect, value: Any) -> Any:
    def loop(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            result(bind(value, dialect), dialect)
        return time.perf_counter() - t0

    return loop


def bench_cipher(crypto: FieldCrypto, dialect: sa.Dialect, n: int, reps: int) -> list[Result]:
    console.rule(f"1. encrypt + decrypt of a {len(PHONE_BYTES)}-byte phone vs raw AESGCM")
    md = sa.MetaData()
    table = sa.Table(
        "customer", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("phone", EncryptedString(crypto, length=20)),
        sa.Column("phone_bin", EncryptedString(crypto, length=20, binary=True)),
    )  # fmt: skip
    text_t, bin_t = table.c.phone.type, table.c.phone_bin.type
    fk = crypto.field("customer", "phone")
    assert text_t.process_result_value(text_t.process_bind_param(PHONE, dialect), dialect) == PHONE
    assert bin_t.process_result_value(bin_t.process_bind_param(PHONE, dialect), dialect) == PHONE
    assert fk.decrypt(fk.encrypt(PHONE_BYTES)) == PHONE_BYTES
    stored = text_t.process_bind_param(PHONE, dialect)

    aead = AESGCM(AESGCM.generate_key(256))
    # For information: raw AES-GCM with associated data as long as riskguard's (the
    # 25-byte header and the table/column context) and the header glued on.
    aad = bytes(25) + b"riskguard/field/1" + b"\x00\x08customer\x00\x05phone\x00\x00\x00\x00"

    def raw(n: int) -> float:
        enc, dec, rnd, pt = aead.encrypt, aead.decrypt, os.urandom, PHONE_BYTES
        t0 = time.perf_counter()
        for _ in range(n):
            nonce = rnd(12)
            dec(nonce, enc(nonce, pt, None), None)
        return time.perf_counter() - t0

    def raw_aad(n: int) -> float:
        enc, dec, rnd, pt = aead.encrypt, aead.decrypt, os.urandom, PHONE_BYTES
        t0 = time.perf_counter()
        for _ in range(n):
            nonce = rnd(12)
            data = nonce + enc(nonce, pt, aad)
            dec(data[:12], data[12:], aad)
        return time.perf_counter() - t0

    def field_key(n: int) -> float:
        enc, dec, pt = fk.encrypt, fk.decrypt, PHONE_BYTES
        t0 = time.perf_counter()
        for _ in range(n):
            dec(enc(pt))
        return time.perf_counter() - t0

    best = best_of(
        {
            "raw": raw,
            "raw_aad": raw_aad,
            "text": _round_trip_loop(
                text_t.process_bind_param, text_t.process_result_value, dialect, PHONE
            ),
            "binary": _round_trip_loop(
                bin_t.process_bind_param, bin_t.process_result_value, dialect, PHONE
            ),
            "field": field_key,
        },
        n,
        reps,
    )
    labels = {
        "raw": "raw AESGCM encrypt+decrypt, os.urandom(12) nonce",
        "raw_aad": "raw AESGCM + AAD of riskguard's size (info)",
        "text": "EncryptedString text (base64url) bind+result",
        "binary": "EncryptedString binary=True bind+result",
        "field": "FieldKey.encrypt + decrypt",
    }
    for k, label in labels.items():
        console.print(
            f"{label:<52}: {_rate(n, best[k], 'round trips/s'):>24}  "
            f"{best[k] / n * 1e6:6.2f} µs  ({best[k] / best['raw']:.2f}x raw time)"
        )
    console.print(f"stored text form: {len(stored)} characters for {len(PHONE_BYTES)} bytes")
    rt = "rt/s"
    return [
        _ratio_result("1 column text enc+dec vs AESGCM", n, best["text"], best["raw"],
                      "raw", 0.7, rt),
        _ratio_result("1 column binary enc+dec vs AESGCM", n, best["binary"], best["raw"],
                      "raw", 0.7, rt),
        _ratio_result("1 FieldKey enc+dec vs AESGCM", n, best["field"], best["raw"],
                      "raw", 0.7, rt),
        _ratio_result("1 FieldKey vs AESGCM+same-size AAD", n, best["field"],
                      best["raw_aad"], "raw+AAD", None, rt),
    ]  # fmt: skip


# -- 2. vs sqlalchemy-utils StringEncryptedType -------------------------------------------


def _models(crypto: FieldCrypto, su_key: str) -> dict[str, tuple[Any, Any]]:
    """The same model three times: riskguard, sqlalchemy-utils and a plain column."""

    class RgBase(DeclarativeBase):
        pass

    class RgCustomer(RgBase):
        __tablename__ = "customer"
        id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
        phone: Mapped[str | None] = mapped_column(EncryptedString(crypto, length=20))

    class SuBase(DeclarativeBase):
        pass

    class SuCustomer(SuBase):
        __tablename__ = "customer"
        id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
        phone: Mapped[str | None] = mapped_column(
            StringEncryptedType(sa.Unicode, su_key, AesGcmEngine)
        )

    class PlainBase(DeclarativeBase):
        pass

    class PlainCustomer(PlainBase):
        __tablename__ = "customer"
        id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
        phone: Mapped[str | None] = mapped_column(sa.String(20))

    return {
        "riskguard": (RgBase, RgCustomer),
        "sqlalchemy-utils": (SuBase, SuCustomer),
        "plain": (PlainBase, PlainCustomer),
    }


def _orm_round(base: Any, model: Any, engine: Engine, phones: list[str]) -> tuple[float, float]:
    base.metadata.drop_all(engine)
    base.metadata.create_all(engine)
    t0 = time.perf_counter()
    with Session(engine) as s:
        s.add_all([model(id=i, phone=p) for i, p in enumerate(phones, 1)])
        s.commit()
    t1 = time.perf_counter()
    with Session(engine) as s:
        got = [c.phone for c in s.scalars(sa.select(model).order_by(model.id))]
    t2 = time.perf_counter()
    if got != phones:
        raise AssertionError(f"{model.__name__}: the ORM did not read back what it wrote")
    return t1 - t0, t2 - t1


def bench_sqlalchemy_utils(
    crypto: FieldCrypto, dialect: sa.Dialect, n: int, reps: int, orm_rows: int, orm_reps: int
) -> list[Result]:
    console.rule(
        f"2. vs sqlalchemy-utils {sqlalchemy_utils.__version__} StringEncryptedType"
        "(sa.Unicode, key, AesGcmEngine)"
    )
    su_key = os.urandom(16).hex()
    models = _models(crypto, su_key)
    rg_t = models["riskguard"][1].__table__.c.phone.type
    su_t = models["sqlalchemy-utils"][1].__table__.c.phone.type
    results: list[Result] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = su_t.process_result_value(su_t.process_bind_param(PHONE, dialect), dialect)
        assert rt == PHONE
        best = best_of(
            {
                "riskguard": _round_trip_loop(
                    rg_t.process_bind_param, rg_t.process_result_value, dialect, PHONE
                ),
                "sqlalchemy-utils": _round_trip_loop(
                    su_t.process_bind_param, su_t.process_result_value, dialect, PHONE
                ),
            },
            n,
            reps,
        )
        for k, s in best.items():
            console.print(
                f"(a) {k:<17} type bind+result: {_rate(n, s, 'round trips/s'):>24}  "
                f"{s / n * 1e6:6.2f} µs"
            )
        results.append(
            _ratio_result("2a type bind+result vs s-utils", n, best["riskguard"],
                          best["sqlalchemy-utils"], "s-utils", 1.0, "rt/s")
        )  # fmt: skip

        phones = [_phone(i) for i in range(orm_rows)]
        engines = {k: db.create_engine("sqlite://") for k in models}
        try:
            small = phones[:1000]
            for k, (base, model) in models.items():  # warm-up: mappers, statement caches
                _orm_round(base, model, engines[k], small)
            ins = dict.fromkeys(models, float("inf"))
            sel = dict.fromkeys(models, float("inf"))
            both = dict.fromkeys(models, float("inf"))
            for _ in range(orm_reps):
                for k, (base, model) in models.items():
                    i_s, s_s = _orm_round(base, model, engines[k], phones)
                    ins[k], sel[k] = min(ins[k], i_s), min(sel[k], s_s)
                    both[k] = min(both[k], i_s + s_s)
        finally:
            for e in engines.values():
                e.dispose()
    console.print(f"(b) ORM on in-memory SQLite, {orm_rows:,} rows, best of {orm_reps}:")
    for k in models:
        console.print(
            f"    {k:<17} insert {_rate(orm_rows, ins[k], 'rows/s'):>16}   select "
            f"{_rate(orm_rows, sel[k], 'rows/s'):>16}   insert+select {both[k]:.3f} s"
        )
    su = "sqlalchemy-utils"
    results += [
        _ratio_result("2b ORM insert vs s-utils", orm_rows, ins["riskguard"], ins[su],
                      "s-utils", 1.0, "rows/s"),
        _ratio_result("2b ORM select vs s-utils", orm_rows, sel["riskguard"], sel[su],
                      "s-utils", 1.0, "rows/s"),
        _ratio_result("2b ORM insert+select vs s-utils", orm_rows, both["riskguard"],
                      both[su], "s-utils", 1.0, "rows/s"),
        _ratio_result("2b ORM insert+select vs plain String", orm_rows, both["riskguard"],
                      both["plain"], "plain", None, "rows/s"),
    ]  # fmt: skip
    return results


# -- 3. blind index vs raw HMAC ----------------------------------------------------------


def bench_blind(crypto: FieldCrypto, n: int, reps: int) -> list[Result]:
    console.rule("3. blind index vs raw HMAC-SHA256")
    bi = crypto.index("customer", "phone", "phone_bidx", "phone", 18)
    expected = bi.compute_normalised(CANONICAL)
    assert all(bi.compute(s) == expected for s in SPELLINGS)
    key = os.urandom(32)
    msg = CANONICAL.encode()

    def raw(n: int) -> float:
        digest = hmac.digest
        t0 = time.perf_counter()
        for _ in range(n):
            digest(key, msg, "sha256")
        return time.perf_counter() - t0

    def normalised(n: int) -> float:
        compute, value = bi.compute_normalised, CANONICAL
        t0 = time.perf_counter()
        for _ in range(n):
            compute(value)
        return time.perf_counter() - t0

    spellings = SPELLINGS * (n // len(SPELLINGS) + 1)

    def with_normaliser(n: int) -> float:
        compute = bi.compute
        t0 = time.perf_counter()
        for s in spellings[:n]:  # slicing happens once, before the loop
            compute(s)
        return time.perf_counter() - t0

    best = best_of({"raw": raw, "normalised": normalised, "compute": with_normaliser}, n, reps)
    labels = {
        "raw": f"hmac.digest(key, {len(msg)} bytes, 'sha256')",
        "normalised": "BlindIndex.compute_normalised (18 bits)",
        "compute": f"BlindIndex.compute, {len(SPELLINGS)} spellings in turn",
    }
    for k, label in labels.items():
        console.print(
            f"{label:<44}: {_rate(n, best[k]):>16}  {best[k] / n * 1e6:6.2f} µs  "
            f"({best[k] / best['raw']:.2f}x raw time)"
        )
    return [
        _ratio_result("3 compute_normalised vs HMAC", n, best["normalised"], best["raw"],
                      "raw", 0.7, "ops/s"),
        _ratio_result("3 compute (spellings) vs HMAC", n, best["compute"], best["raw"],
                      "raw", None, "ops/s"),
    ]  # fmt: skip


# -- 4. rewrap ---------------------------------------------------------------------------


def _load(engine: Engine, crypto: FieldCrypto, table: sa.Table, n: int) -> float:
    t0 = time.perf_counter()
    insert = table.insert()
    for start in range(1, n + 1, LOAD_CHUNK):
        rows = [
            crypto.prepare(table, {"id": i, "phone": _phone(i)})
            for i in range(start, min(n + 1, start + LOAD_CHUNK))
        ]
        with engine.begin() as conn:
            conn.execute(insert, rows)
    return time.perf_counter() - t0


def _plain_rewrite(engine: Engine, table: sa.Table, batch: int) -> tuple[int, float]:
    """The baseline: read every row in key order, ``batch`` at a time, and write a new value
    (same length) back with one executemany UPDATE per batch, in its own transaction."""
    update = (
        table.update().where(table.c.id == sa.bindparam("k_id")).values(phone=sa.bindparam("new"))
    )
    done = 0
    cursor: int | None = None
    t0 = time.perf_counter()
    while True:
        q = sa.select(table.c.id, table.c.phone).order_by(table.c.id).limit(batch)
        if cursor is not None:
            q = q.where(table.c.id > cursor)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            break
        params = [{"k_id": k, "new": ("A" if p[-1] != "A" else "B") + p[1:]} for k, p in rows]
        with engine.begin() as conn:
            conn.execute(update, params)
        done += len(params)
        cursor = rows[-1][0]
    return done, time.perf_counter() - t0


def bench_rewrap(kind: str, url: str, n: int, batch: int, goal: float | None) -> list[Result]:
    engine = db.create_engine(url)
    try:
        db.create_schema(engine)
        crypto = FieldCrypto(Keyring(engine, MemoryKeyProvider()))
        md = sa.MetaData()
        table = sa.Table(
            "bench_customer", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("phone", EncryptedString(crypto, length=20, per_row=True)),
        )  # fmt: skip
        plain = sa.Table(
            "bench_plain", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("phone", sa.String(80)),
        )  # fmt: skip
        md.create_all(engine)
        load_s = _load(engine, crypto, table, n)
        with engine.begin() as conn:  # the same stored values, copied in SQL
            conn.execute(
                plain.insert().from_select(
                    ["id", "phone"],
                    sa.select(table.c.id, sa.type_coerce(table.c.phone, sa.String)),
                )
            )
            if kind == "PostgreSQL":
                conn.exec_driver_sql("ANALYZE")
        console.print(
            f"loaded {n:,} rows with crypto.prepare + executemany in {load_s:.1f} s "
            f"({_rate(n, load_s, 'rows/s')}); copied them to a plain table"
        )
        base_n, base_s = _plain_rewrite(engine, plain, batch)
        console.print(
            f"plain SELECT + executemany UPDATE, batch {batch}: {base_n:,} rows in "
            f"{base_s:.1f} s ({_rate(base_n, base_s, 'rows/s')})"
        )

        name = "field:bench_customer.phone"
        version = crypto.keyring.rotate(name)
        t0 = time.perf_counter()
        report = rewrap_column(engine, table, "phone", batch_size=batch)
        rg_s = time.perf_counter() - t0
        ks = crypto.keyring.describe(name).id
        in_use = versions_in_use(engine, table, "phone")
        console.print(
            f"rewrap_column, batch {batch}: {report.rewrapped:,} rows in {rg_s:.1f} s "
            f"({_rate(report.rewrapped, rg_s, 'rows/s')}), failed {report.failed}, "
            f"done {report.done}; versions in use {in_use}"
        )
        ok = (
            report.rewrapped == n and report.done and report.failed == 0
            and in_use == {(ks, version): n}
        )  # fmt: skip
        ids = list(range(1, n + 1, max(1, n // 50)))
        with engine.connect() as conn:
            got = conn.execute(sa.select(table).where(table.c.id.in_(ids))).mappings().all()
        ok = ok and {r["id"]: crypto.reveal(table, r)["phone"] for r in got} == {
            i: _phone(i) for i in ids
        }
        console.print(f"every row under version {version}, a sample of {len(ids)} reads back: {ok}")
        rg_rate = report.rewrapped / rg_s
        base_rate = base_n / base_s
        return [
            Result(
                f"4 rewrap {n:,} rows, {kind}",
                _rate(report.rewrapped, rg_s, "rows/s"),
                f"{_rate(base_n, base_s, 'rows/s')} plain",
                rg_rate / base_rate,
                "(info)" if goal is None else f"≥ {goal / 1000:g}k rows/s",
                None if goal is None else ok and rg_rate >= goal,
            )
        ]
    finally:
        engine.dispose()


def bench_rewrap_postgres(pg_url: str, n: int, batch: int) -> list[Result]:
    console.rule(f"4b. rewrap {n:,} rows on PostgreSQL")
    with private_schema(pg_url, console) as url:
        if url is None:
            return [Result(f"4 rewrap {n:,} rows, PostgreSQL", "skipped", "-", None, "-", None)]
        return bench_rewrap("PostgreSQL", url, n, batch, None)


# -- main -------------------------------------------------------------------------------


def summary(results: list[Result]) -> None:
    table = Table(title="riskguard.crypto benchmarks (ratio: riskguard throughput / baseline)")
    for col in ("what", "riskguard", "baseline", "ratio", "goal", "met"):
        table.add_column(col, justify="right" if col == "ratio" else "left", no_wrap=True)
    for r in results:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = "-" if r.met is None else ("[green]✔" if r.met else "[red]✘")
        table.add_row(r.name, r.riskguard, r.baseline, ratio, r.goal, met)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000, help="iterations per small loop")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each small loop (best)")
    ap.add_argument("--orm-rows", type=int, default=20_000, help="rows in the ORM comparison")
    ap.add_argument("--orm-repeats", type=int, default=3, help="runs of the ORM comparison")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows to rewrap")
    ap.add_argument("--batch", type=int, default=1000, help="rewrap / baseline batch size")
    ap.add_argument("--skip-postgres", action="store_true", help="skip the PostgreSQL rewrap")
    ap.add_argument("--postgres-url", default=DEFAULT_PG_URL)
    args = ap.parse_args(argv)

    console.print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"cryptography {cryptography.__version__}, SQLAlchemy {sa.__version__}, "
        f"sqlalchemy-utils {sqlalchemy_utils.__version__}"
    )
    started = time.perf_counter()
    n, reps = args.iterations, args.repeats
    key_engine = db.create_engine("sqlite://")  # the keyring of parts 1-3 (keys are cached)
    db.create_schema(key_engine)
    crypto = FieldCrypto(Keyring(key_engine, MemoryKeyProvider()))
    dialect = key_engine.dialect
    results: list[Result] = []
    results += bench_cipher(crypto, dialect, n, reps)
    results += bench_sqlalchemy_utils(crypto, dialect, n, reps, args.orm_rows, args.orm_repeats)
    results += bench_blind(crypto, n, reps)
    key_engine.dispose()
    with tempfile.TemporaryDirectory(prefix="rgbench-") as d:
        console.rule(f"4a. rewrap {args.rows:,} rows on a SQLite file")
        results += bench_rewrap(
            "SQLite", f"sqlite:///{Path(d) / 'rewrap.db'}", args.rows, args.batch, 20_000
        )
    if args.skip_postgres:
        console.rule("4b. PostgreSQL")
        console.print("[yellow]skipped (--skip-postgres)")
        results.append(
            Result(f"4 rewrap {args.rows:,} rows, PostgreSQL", "skipped", "-", None, "-", None)
        )
    else:
        results += bench_rewrap_postgres(args.postgres_url, args.rows, args.batch)
    summary(results)
    console.print(f"total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
