"""Rewrap: move an encrypted column's rows to its keyset's primary version.

Rows are read in primary-key order, in batches of those *not* under the primary (the
ciphertext's first 9 bytes name its key, so the database filters them: a prefix match on
text columns, ``substr`` on binary ones). Each batch re-encrypts its rows and writes them
with compare-and-set (``UPDATE … WHERE pk = :pk AND col = :old``) in one transaction, so a
batch lands whole or not at all and a row changed meanwhile by the application is left
for the next run. The state lives in the data itself: after a crash, running again
resumes where it stopped. Rows that fail to decrypt (damaged, foreign) are counted and
skipped, never rewritten; they keep their old version in the report, which keeps that
version from being retired.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from riskguard.crypto._crypto import INDEX_KEYSET, blind_spec
from riskguard.crypto._format import decode_text, encode_text, row_key
from riskguard.crypto._sqla import _Encrypted
from riskguard.db import map_errors, meta_table
from riskguard.errors import DecryptionError, KeyManagementError

__all__ = [
    "RebuildReport",
    "RewrapReport",
    "encrypted_columns",
    "index_rebuilt_version",
    "rebuild_blind_index",
    "rewrap_column",
    "versions_in_use",
]

_IDS = struct.Struct(">II")
_PREFIX_BYTES = 9  # format, keyset id, version
_PREFIX_CHARS = 12  # 9 bytes in base64url


@dataclass
class RewrapReport:
    """What :func:`rewrap_column` did and what remains."""

    table: str
    column: str
    keyset: str
    primary: tuple[int, int]
    rewrapped: int = 0
    failed: int = 0
    failed_rows: list[str] = field(default_factory=list)
    remaining: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """No row is left under any version but the primary."""
        return not any(k != self.primary and n for k, n in self.remaining.items())


def encrypted_columns(tables: list[sa.Table]) -> list[tuple[sa.Table, str]]:
    """The (table, column) pairs of ``tables`` whose type is an encrypted column."""
    return [(t, c.name) for t in tables for c in t.columns if isinstance(c.type, _Encrypted)]


def _type(table: sa.Table, column: str) -> _Encrypted:
    t = table.c[column].type
    if not isinstance(t, _Encrypted):
        raise KeyManagementError(f"{table.name}.{column} is not an encrypted column")
    return t


def _prefix_expr(table: sa.Table, column: str, t: _Encrypted) -> Any:
    col = table.c[column]
    # Compare the stored form's first bytes without the type's own conversion.
    raw = sa.type_coerce(col, sa.LargeBinary if t.binary else sa.Text)
    return sa.func.substr(raw, 1, _PREFIX_BYTES if t.binary else _PREFIX_CHARS)


def versions_in_use(engine: Engine, table: sa.Table, column: str) -> dict[tuple[int, int], int]:
    """Rows per (keyset id, key version) in ``table.column`` (NULLs not counted)."""
    t = _type(table, column)
    prefix = _prefix_expr(table, column, t).label("p")
    q = sa.select(prefix, sa.func.count()).where(table.c[column].is_not(None)).group_by(prefix)
    out: dict[tuple[int, int], int] = {}
    with map_errors(engine, "counting key versions"), engine.connect() as conn:
        for p, n in conn.execute(q):
            try:
                raw = bytes(p) if t.binary else decode_text(p)
                if len(raw) != _PREFIX_BYTES:
                    raise DecryptionError("short", check="format")
                _fmt, ks, v = raw[0], *_IDS.unpack_from(raw, 1)
            except DecryptionError:
                ks, v = 0, 0  # not a riskguard ciphertext: reported under (0, 0)
            out[(ks, v)] = out.get((ks, v), 0) + int(n)
    return out


def rewrap_column(
    engine: Engine,
    table: sa.Table,
    column: str,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> RewrapReport:
    """Re-encrypt every row of ``table.column`` not under its keyset's primary version.

    :param progress: called after each committed batch with the rows it rewrapped.
    :raises KeyManagementError: the column is not encrypted, or is encrypted per subject
        (each subject has its own key; subject keys move with the subject KEK instead).
    """
    t = _type(table, column)
    if t.subject is not None:
        raise KeyManagementError(
            f"{table.name}.{column} is encrypted per subject: rotate the subject KEK instead",
            key_id=f"{table.name}.{column}",
        )
    fk = t.field()
    keyring = t.resolve_crypto().keyring
    keyring.invalidate()  # a promotion made by another process must count now
    primary = keyring.primary(fk.keyset)
    report = RewrapReport(table.name, column, fk.keyset, (primary.keyset_id, primary.version))
    stored_prefix: Any = primary.prefix if t.binary else encode_text(primary.prefix)
    pk_cols = list(table.primary_key.columns)
    if not pk_cols:
        raise KeyManagementError(f"{table.name} has no primary key: rows cannot be rewrapped")
    col = table.c[column]
    # Bind the stored form directly (no round trip through the column type).
    raw_type: Any = sa.LargeBinary() if t.binary else sa.Text()
    raw_col = sa.type_coerce(col, raw_type)
    update = _cas_update(table, pk_cols, raw_col, raw_type, column, raw_type)
    where = [col.is_not(None), _prefix_expr(table, column, t) != stored_prefix]
    for rows in _pages(engine, pk_cols, [raw_col], where, batch_size, "reading rows to rewrap"):
        params = []
        for r in rows:
            keys, stored = tuple(r[: len(pk_cols)]), r[-1]
            row_id = row_key(keys)
            try:
                data = bytes(stored) if t.binary else decode_text(stored)
                new = fk.reencrypt(data, row=row_id if t.per_row else None)
            except DecryptionError:
                _note_failure(report, row_id)
                continue
            p: dict[str, Any] = {f"k_{c.name}": k for c, k in zip(pk_cols, keys, strict=True)}
            p["old"], p["new"] = stored, t.encode(new)
            params.append(p)
        if params:
            with map_errors(engine, "rewrapping rows"), engine.begin() as conn:
                n = conn.execute(update, params).rowcount
            report.rewrapped += max(n, 0)
            if progress is not None:
                progress(len(params))
    report.remaining = versions_in_use(engine, table, column)
    return report


@dataclass
class RebuildReport:
    """What :func:`rebuild_blind_index` did."""

    table: str
    column: str
    index_version: int
    scanned: int = 0
    updated: int = 0
    skipped_shredded: int = 0
    failed: int = 0
    failed_rows: list[str] = field(default_factory=list)


def rebuild_blind_index(
    engine: Engine,
    table: sa.Table,
    column: str,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Recompute ``table.column``'s blind index under the current index root (after
    ``riskguard keys rotate index:blind``). Searches match old and new values meanwhile
    (:meth:`FieldCrypto.blind_clause` asks for every usable root version), so the rebuild
    can run online; each batch commits whole, with compare-and-set on the ciphertext, and a
    second run after a crash finds nothing left to change. Rows of shredded subjects keep
    their NULL index.

    :raises KeyManagementError: the column is not encrypted.
    :raises ConfigError: the column has no blind index.
    """
    from riskguard.errors import ShreddedError

    t = _type(table, column)
    crypto = t.resolve_crypto()
    spec = blind_spec(t)
    fk = t.field()
    crypto.keyring.invalidate()
    version = crypto.keyring.primary(INDEX_KEYSET, kind="index").version
    report = RebuildReport(table.name, column, version)
    pk_cols = list(table.primary_key.columns)
    if not pk_cols:
        raise KeyManagementError(f"{table.name} has no primary key: indexes cannot be rebuilt")
    raw_type: Any = sa.LargeBinary() if t.binary else sa.Text()
    raw_col = sa.type_coerce(table.c[column], raw_type)
    idx_col = table.c[spec.column]
    subject_col = table.c[t.subject] if t.subject is not None else None
    extra = [subject_col] if subject_col is not None else []
    # Compare-and-set on the ciphertext *and* the index read: a shred that cleared the
    # index meanwhile is not undone.
    update = _cas_update(table, pk_cols, raw_col, raw_type, spec.column).where(
        idx_col.is_not_distinct_from(sa.bindparam("cur", type_=idx_col.type))
    )
    n = len(pk_cols)
    where = [table.c[column].is_not(None)]
    pages = _pages(engine, pk_cols, [raw_col, idx_col, *extra], where, batch_size,
                   "reading rows to re-index")  # fmt: skip
    for rows in pages:
        params = []
        for r in rows:
            keys, stored, current = tuple(r[:n]), r[n], r[n + 1]
            subject = str(r[n + 2]) if subject_col is not None and r[n + 2] is not None else None
            row_id = row_key(keys)
            report.scanned += 1
            try:
                data = bytes(stored) if t.binary else decode_text(stored)
                plain = t.from_bytes(
                    fk.decrypt(data, row=row_id if t.per_row else None, subject=subject)
                )
            except ShreddedError:
                report.skipped_shredded += 1
                continue
            except DecryptionError:
                _note_failure(report, row_id)
                continue
            value = crypto.blind_value(t, plain)
            if value != current:
                p: dict[str, Any] = {f"k_{c.name}": k for c, k in zip(pk_cols, keys, strict=True)}
                p["old"], p["new"], p["cur"] = stored, value, current
                params.append(p)
        if params:
            with map_errors(engine, "re-indexing rows"), engine.begin() as conn:
                conn.execute(update, params)
            report.updated += len(params)
        if progress is not None:
            progress(len(rows))
    if report.failed == 0:
        _record_rebuild(engine, table.name, column, version)
    return report


def _pages(
    engine: Engine,
    pk_cols: list[sa.Column[Any]],
    columns: list[Any],
    where: list[Any],
    batch_size: int,
    what: str,
) -> Iterator[Sequence[Any]]:
    """Batches of ``pk_cols + columns`` rows matching ``where``, in primary-key order
    (keyset pagination: each batch starts after the last key of the one before)."""
    cursor: tuple[Any, ...] | None = None
    while True:
        q = sa.select(*pk_cols, *columns).where(*where).order_by(*pk_cols).limit(batch_size)
        if cursor is not None and len(pk_cols) == 1:
            q = q.where(pk_cols[0] > cursor[0])  # a plain comparison every engine indexes
        elif cursor is not None:
            q = q.where(sa.tuple_(*pk_cols) > sa.tuple_(*cursor))
        with map_errors(engine, what), engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        yield rows
        cursor = tuple(rows[-1][: len(pk_cols)])


def _cas_update(
    table: sa.Table,
    pk_cols: list[sa.Column[Any]],
    raw_col: Any,
    raw_type: Any,
    target: str,
    value_type: Any = None,
) -> Any:
    """``UPDATE table SET target = :new WHERE pk = :k_<pk> AND col = :old`` (stored forms)."""
    return (
        table.update()
        .where(
            *[c == sa.bindparam(f"k_{c.name}") for c in pk_cols],
            raw_col == sa.bindparam("old", type_=raw_type),
        )
        .values({target: sa.bindparam("new", type_=value_type)})
    )


def _note_failure(report: RewrapReport | RebuildReport, row_id: str) -> None:
    report.failed += 1
    if len(report.failed_rows) < 20:
        report.failed_rows.append(row_id)


def _rebuild_key(table: str, column: str) -> str:
    digest = hashlib.sha256(f"{table}\x00{column}".encode()).hexdigest()[:40]
    return "crypto.ix:" + digest  # rg_meta keys are at most 64 characters


def _record_rebuild(engine: Engine, table: str, column: str, version: int) -> None:
    key = _rebuild_key(table, column)
    with map_errors(engine, "recording a finished re-index"), engine.begin() as conn:
        done = conn.execute(
            meta_table.update().where(meta_table.c.key == key).values(value=str(version))
        ).rowcount
        if not done:
            conn.execute(meta_table.insert().values(key=key, value=str(version)))


def index_rebuilt_version(engine: Engine, table: sa.Table, column: str) -> int | None:
    """The index-root version the last complete, failure-free :func:`rebuild_blind_index`
    of ``table.column`` ran under (``None``: never). Retiring an older root is safe once
    every indexed column has been rebuilt under a newer one."""
    q = sa.select(meta_table.c.value).where(meta_table.c.key == _rebuild_key(table.name, column))
    with map_errors(engine, "reading re-index records"), engine.connect() as conn:
        value = conn.execute(q).scalar_one_or_none()
    return int(value) if value else None
