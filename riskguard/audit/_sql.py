"""The SQL :class:`~riskguard.audit._store.AuditStore` (SQLite, PostgreSQL, MariaDB) and its
``rg_audit_*`` tables.

Appends serialise on the one row of ``rg_audit_head``: ``SELECT … FOR UPDATE`` on
PostgreSQL and MariaDB, ``BEGIN IMMEDIATE`` on SQLite. The events, the Merkle nodes they
complete and the new head are written in that transaction, so a batch lands whole or not at
all, whichever process or thread wrote it, and a process killed mid-append leaves the last
committed state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from riskguard.audit._canonical import GENESIS_HASH, canonical_json, format_ts
from riskguard.audit._checkpoint import SignedCheckpoint, parse_checkpoint
from riskguard.audit._event import AuditEvent, PendingEvent
from riskguard.audit._merkle import Frontier, node_hash
from riskguard.audit._store import (
    STORED_LEVEL,
    Head,
    SearchFilter,
    check_prune,
    event_row,
    extend_chain,
    frontier_at,
    subtree_from_leaves,
)
from riskguard.audit._verify import Row
from riskguard.db import engine_kind, map_errors, metadata, write_transaction
from riskguard.errors import ConfigError, StorageError

__all__ = [
    "SqlStore",
    "checkpoint_table",
    "event_table",
    "event_tuple",
    "event_values",
    "head_table",
    "node_table",
    "row_event",
]

_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

head_table = sa.Table(
    "rg_audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("log_id", sa.String(255), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("frontier", sa.Text, nullable=False),
    sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
    sa.Column("checkpoint_at", sa.String(27)),
    sa.Column("pruned_through", sa.BigInteger, nullable=False),
    sa.Column("anchor_hash", sa.String(64), nullable=False),
    sa.Column("anchor_frontier", sa.Text, nullable=False),
)

event_table = sa.Table(
    "rg_audit_event",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(32), nullable=False),
    sa.Column("ts", sa.String(27), nullable=False, index=True),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("actor_id", sa.String(255), index=True),
    sa.Column("actor_type", sa.String(16)),
    sa.Column("actor_tenant", sa.String(255)),
    sa.Column("actor_roles", sa.Text),
    sa.Column("actor_ip", sa.String(255)),
    sa.Column("resource_type", sa.String(255), index=True),
    sa.Column("resource_id", sa.String(255), index=True),
    sa.Column("resource_tenant", sa.String(255)),
    sa.Column("reason", sa.Text),
    sa.Column("request_id", sa.String(255), index=True),
    sa.Column("details", _LONG_TEXT, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

node_table = sa.Table(
    "rg_audit_node",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

checkpoint_table = sa.Table(
    "rg_audit_checkpoint",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.String(27), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)

_E = event_table.c
# Prebuilt statements with bound parameters: one compiled form each, reused per append.
_HEAD_COLS = ("seq", "head_hash", "frontier")
_MORE_COLS = ("checkpoint_size", "checkpoint_at", "pruned_through", "anchor_hash",
              "anchor_frontier")  # fmt: skip
_HEAD_UPDATES = {
    chain_only: head_table.update()
    .where(head_table.c.id == 1)
    .values({c: sa.bindparam(c) for c in (_HEAD_COLS if chain_only else _HEAD_COLS + _MORE_COLS)})
    for chain_only in (True, False)
}
_PAGE = 5000


def event_values(ev: AuditEvent) -> dict[str, Any]:
    """The ``rg_audit_event`` row of ``ev``."""
    a, r = ev.actor, ev.resource
    return {
        "seq": ev.seq,
        "event_id": ev.id,
        "ts": ev.ts,
        "action": ev.action,
        "outcome": ev.outcome,
        "actor_id": a["id"] if a else None,
        "actor_type": a["type"] if a else None,
        "actor_tenant": a["tenant"] if a else None,
        "actor_roles": canonical_json(a["roles"]) if a else None,
        "actor_ip": a["ip"] if a else None,
        "resource_type": r["type"] if r else None,
        "resource_id": r["id"] if r else None,
        "resource_tenant": r["tenant"] if r else None,
        "reason": ev.reason,
        "request_id": ev.request_id,
        "details": ev.details_json,
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
    }


def event_tuple(ev: AuditEvent) -> tuple[Any, ...]:
    """:func:`event_values` as a tuple in the table's column order."""
    a, r = ev.actor, ev.resource
    if a is None:
        a_id = a_type = a_tenant = a_roles = a_ip = None
    else:
        a_id, a_type, a_tenant, a_ip = a["id"], a["type"], a["tenant"], a["ip"]
        a_roles = canonical_json(a["roles"])
    r_type, r_id, r_tenant = (None, None, None) if r is None else (r["type"], r["id"], r["tenant"])
    return (
        ev.seq, ev.id, ev.ts, ev.action, ev.outcome, a_id, a_type, a_tenant, a_roles, a_ip,
        r_type, r_id, r_tenant, ev.reason, ev.request_id, ev.details_json, ev.prev_hash, ev.hash,
    )  # fmt: skip


def row_event(row: Any) -> AuditEvent:
    """The event a row holds, exactly as stored (verification re-hashes it).

    :raises ValueError: a JSON column does not parse.
    """
    actor = None
    if row.actor_id is not None or row.actor_type is not None:
        roles = json.loads(row.actor_roles) if row.actor_roles is not None else None
        actor = {
            "id": row.actor_id,
            "type": row.actor_type,
            "tenant": row.actor_tenant,
            "roles": roles,
            "ip": row.actor_ip,
        }
    resource = None
    if row.resource_type is not None:
        resource = {"type": row.resource_type, "id": row.resource_id, "tenant": row.resource_tenant}
    return AuditEvent(
        seq=int(row.seq),
        id=row.event_id,
        ts=row.ts,
        action=row.action,
        outcome=row.outcome,
        actor=actor,
        resource=resource,
        reason=row.reason,
        request_id=row.request_id,
        details_json=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class SqlStore:
    """An :class:`AuditStore` on riskguard's SQL tables.

    :param engine: the engine (its tables are created by ``Guard.create_schema()`` or
        :func:`riskguard.db.create_schema`).
    :param log_id: the log's name, written into the head row on first use and checked after.
    """

    def __init__(self, engine: Engine, log_id: str = "riskguard/audit") -> None:
        self.engine = engine
        self.log_id = log_id
        self._kind = engine_kind(engine)
        self._ensured = False
        self._insert_sql: str | None = None

    # -- head ---------------------------------------------------------------------------

    def _ensure_head(self) -> None:
        if self._ensured:
            return
        try:
            with map_errors(self.engine, "reading the audit head"), self.engine.begin() as conn:
                row = conn.execute(sa.select(head_table.c.log_id)).first()
        except StorageError as exc:
            exc.hint = exc.hint or (
                "are riskguard's tables created? run `riskguard init` or Guard.create_schema()"
            )
            raise
        if row is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        head_table.insert().values(
                            id=1,
                            log_id=self.log_id,
                            seq=0,
                            head_hash=GENESIS_HASH,
                            frontier=Frontier().to_text(),
                            checkpoint_size=0,
                            checkpoint_at=None,
                            pruned_through=0,
                            anchor_hash=GENESIS_HASH,
                            anchor_frontier=Frontier().to_text(),
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another process created it first
            except sa.exc.SQLAlchemyError as exc:
                with map_errors(self.engine, "creating the audit head"):
                    raise exc
            with map_errors(self.engine, "reading the audit head"), self.engine.begin() as conn:
                row = conn.execute(sa.select(head_table.c.log_id)).first()
        if row is None or row.log_id != self.log_id:
            raise ConfigError(
                f"this database holds audit log {row.log_id if row else '?'!r}, "
                f"not {self.log_id!r}",
                key="audit.log_id",
            )
        self._ensured = True

    def _lock_head(self, conn: Connection, *, lock: bool = True) -> Head:
        q = sa.select(head_table).where(head_table.c.id == 1)
        if lock and self._kind != "sqlite":
            q = q.with_for_update()
        row = conn.execute(q).one()
        return Head(
            seq=int(row.seq),
            hash=row.head_hash,
            frontier=Frontier.from_text(row.frontier),
            checkpoint_size=int(row.checkpoint_size),
            checkpoint_at=row.checkpoint_at,
            pruned_through=int(row.pruned_through),
            anchor_hash=row.anchor_hash,
            anchor_frontier=Frontier.from_text(row.anchor_frontier),
        )

    def _write_head(self, conn: Connection, head: Head, *, chain_only: bool = False) -> None:
        values: dict[str, Any] = {
            "seq": head.seq, "head_hash": head.hash, "frontier": head.frontier.to_text(),
        }  # fmt: skip
        if not chain_only:
            values.update(
                checkpoint_size=head.checkpoint_size,
                checkpoint_at=head.checkpoint_at,
                pruned_through=head.pruned_through,
                anchor_hash=head.anchor_hash,
                anchor_frontier=head.anchor_frontier.to_text(),
            )
        conn.execute(_HEAD_UPDATES[chain_only], values)

    def head(self) -> Head:
        self._ensure_head()
        with map_errors(self.engine, "reading the audit head"), self.engine.connect() as conn:
            return self._lock_head(conn, lock=False)

    # -- writes -------------------------------------------------------------------------

    def _append_locked(
        self,
        conn: Connection,
        head: Head,
        pending: Sequence[PendingEvent],
        *,
        chain_only: bool = True,
    ) -> tuple[list[AuditEvent], Head]:
        events, nodes, new_head = extend_chain(head, pending)
        if events:
            self._insert_events(conn, events)
        if nodes:
            conn.execute(
                node_table.insert(),
                [{"level": lv, "idx": i, "hash": h.hex()} for lv, i, h in nodes],
            )
        # An append moves only the chain; checkpoint() and prune() write the other columns.
        self._write_head(conn, new_head, chain_only=chain_only)
        return events, new_head

    def _insert_events(self, conn: Connection, events: list[AuditEvent]) -> None:
        # One driver-level executemany of tuples: SQLAlchemy's per-row parameter
        # processing would cost more than hashing the events does.
        if self._insert_sql is None:
            d = self.engine.dialect
            mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(d.paramstyle)
            prep = d.identifier_preparer
            cols = ", ".join(prep.quote(c.name) for c in event_table.columns)
            self._insert_sql = (
                f"INSERT INTO {prep.format_table(event_table)} ({cols}) "
                f"VALUES ({', '.join([mark] * len(event_table.columns))})"
                if mark
                else ""  # an unusual driver: let SQLAlchemy bind the parameters
            )
        if self._insert_sql:
            conn.exec_driver_sql(self._insert_sql, [event_tuple(e) for e in events])
        else:
            conn.execute(event_table.insert(), [event_values(e) for e in events])

    def append(self, pending: Sequence[PendingEvent]) -> tuple[list[AuditEvent], Head]:
        self._ensure_head()
        with (
            map_errors(self.engine, "appending audit events"),
            write_transaction(self.engine) as conn,
        ):
            return self._append_locked(conn, self._lock_head(conn), pending)

    def checkpoint(
        self, make: Callable[[Head], SignedCheckpoint], *, force: bool = True
    ) -> SignedCheckpoint | None:
        self._ensure_head()
        with (
            map_errors(self.engine, "writing a checkpoint"),
            write_transaction(self.engine) as conn,
        ):
            head = self._lock_head(conn)
            existing = conn.execute(
                sa.select(checkpoint_table.c.note).where(checkpoint_table.c.tree_size == head.seq)
            ).first()
            if existing is not None:
                return parse_checkpoint(existing.note) if force else None
            if not force and head.checkpoint_size >= head.seq:
                return None
            signed = make(head)
            at = format_ts(signed.checkpoint.time)
            conn.execute(
                checkpoint_table.insert().values(
                    tree_size=head.seq, created_at=at, note=signed.note
                )
            )
            self._write_head(conn, replace(head, checkpoint_size=head.seq, checkpoint_at=at))
            return signed

    def prune(self, through: int, pending: PendingEvent) -> AuditEvent:
        self._ensure_head()
        with (
            map_errors(self.engine, "pruning the audit log"),
            write_transaction(self.engine) as conn,
        ):
            head = self._lock_head(conn)
            check_prune(head, through)
            anchor = frontier_at(through, lambda lv, i: self._perfect(conn, lv, i))
            have = {
                (r.level, int(r.idx))
                for r in conn.execute(sa.select(node_table.c.level, node_table.c.idx).where(
                    node_table.c.level < STORED_LEVEL))
            }  # fmt: skip
            extra = [
                {"level": lv, "idx": i, "hash": h.hex()}
                for lv, i, h in anchor.nodes()
                if lv < STORED_LEVEL and (lv, i) not in have
            ]
            if extra:
                conn.execute(node_table.insert(), extra)
            anchor_hash = conn.execute(sa.select(_E.hash).where(_E.seq == through)).scalar_one()
            conn.execute(event_table.delete().where(_E.seq <= through))
            head = replace(
                head, pruned_through=through, anchor_hash=anchor_hash, anchor_frontier=anchor
            )
            events, _ = self._append_locked(conn, head, [pending], chain_only=False)
            return events[0]

    # -- reads --------------------------------------------------------------------------

    def events(self, after: int = 0, until: int | None = None) -> Iterator[AuditEvent]:
        # Keyset pages: memory stays flat and no cursor is held open across the whole log.
        last = after
        while True:
            q = sa.select(event_table).where(_E.seq > last).order_by(_E.seq).limit(_PAGE)
            if until is not None:
                q = q.where(_E.seq <= until)
            with map_errors(self.engine, "reading audit events"), self.engine.connect() as conn:
                rows = conn.execute(q).all()
            for row in rows:
                yield row_event(row)
            if len(rows) < _PAGE:
                return
            last = int(rows[-1].seq)

    def _perfect(self, conn: Connection, level: int, index: int) -> bytes:
        got = conn.execute(
            sa.select(node_table.c.hash).where(
                node_table.c.level == level, node_table.c.idx == index
            )
        ).first()
        if got is not None:
            return bytes.fromhex(got.hash)
        if level >= STORED_LEVEL:
            raise StorageError(
                f"Merkle node ({level}, {index}) is missing", engine=self._kind,
                hint="run `riskguard audit verify`",
            )  # fmt: skip
        lo = index << level
        leaves = conn.execute(
            sa.select(_E.hash).where(_E.seq > lo, _E.seq <= lo + (1 << level)).order_by(_E.seq)
        ).scalars().all()  # fmt: skip
        if len(leaves) < 1 << level and level > 0:
            # It straddles a prune: its pruned half is an anchor node (see prune()).
            return node_hash(self._perfect(conn, level - 1, 2 * index),
                             self._perfect(conn, level - 1, 2 * index + 1))  # fmt: skip
        return subtree_from_leaves(level, index, list(leaves))

    def perfect(self, level: int, index: int) -> bytes:
        with map_errors(self.engine, "reading Merkle nodes"), self.engine.connect() as conn:
            return self._perfect(conn, level, index)

    def checkpoints(self) -> list[SignedCheckpoint]:
        return [parse_checkpoint(n) for n in self.checkpoint_notes()]

    def checkpoint_notes(self) -> list[str]:
        with map_errors(self.engine, "reading checkpoints"), self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(checkpoint_table.c.note).order_by(checkpoint_table.c.tree_size)
                ).scalars()
            )

    def rows(self, after: int = 0) -> Iterator[Row]:
        for raw in self._raw_rows(after):
            where = f"row seq {raw.seq}"
            try:
                ev = row_event(raw)
            except (ValueError, TypeError) as exc:
                yield Row(int(raw.seq), raw.prev_hash, raw.hash, None, where,
                          f"unreadable row ({type(exc).__name__})")  # fmt: skip
                continue
            yield event_row(ev, where)

    def _raw_rows(self, after: int) -> Iterator[Any]:
        last = after
        while True:
            q = sa.select(event_table).where(_E.seq > last).order_by(_E.seq).limit(_PAGE)
            with map_errors(self.engine, "reading audit events"), self.engine.connect() as conn:
                rows = conn.execute(q).all()
            yield from rows
            if len(rows) < _PAGE:
                return
            last = int(rows[-1].seq)

    def search(
        self, flt: SearchFilter, limit: int = 100, newest_first: bool = True
    ) -> list[AuditEvent]:
        q = sa.select(event_table)
        if flt.action is not None:
            if flt.action.endswith(".*"):
                q = q.where(_E.action.startswith(flt.action[:-1], autoescape=True))
            else:
                q = q.where(_E.action == flt.action)
        for col, val in (
            (_E.outcome, flt.outcome),
            (_E.actor_id, flt.actor),
            (_E.resource_type, flt.resource_type),
            (_E.resource_id, flt.resource_id),
            (_E.request_id, flt.request_id),
        ):
            if val is not None:
                q = q.where(col == val)
        if flt.since is not None:
            q = q.where(_E.ts >= flt.since)
        if flt.until is not None:
            q = q.where(_E.ts < flt.until)
        q = q.order_by(_E.seq.desc() if newest_first else _E.seq).limit(limit)
        with map_errors(self.engine, "searching audit events"), self.engine.connect() as conn:
            return [row_event(r) for r in conn.execute(q)]
