"""A SQL :class:`~riskguard.auth.CounterStore` (``rg_auth_counter``) for login throttling.

Each ``hit`` locks the counter's row (``SELECT … FOR UPDATE``; ``BEGIN IMMEDIATE`` on
SQLite) and updates it; a first hit that races another's insert retries, so every hit is
counted exactly once across processes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from riskguard.auth._throttle import Counter
from riskguard.db import map_errors, metadata, write_transaction
from riskguard.errors import StorageError

__all__ = ["SqlCounterStore", "counter_table"]

counter_table = sa.Table(
    "rg_auth_counter",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # a keyed hash, never a name
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
)
_T = counter_table.c
_RETRIES = 5


class SqlCounterStore:
    """A :class:`~riskguard.auth.CounterStore` on riskguard's SQL tables.

    :param engine: an engine whose database has riskguard's tables.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def hit(self, key: str, *, window: float, now: float) -> Counter:
        """Add one to ``key`` (see the Protocol).

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "counting a login failure"):
            for _ in range(_RETRIES):
                try:
                    with write_transaction(self.engine) as conn:
                        row = conn.execute(
                            sa.select(_T.count, _T.expires_at)
                            .where(_T.key == key)
                            .with_for_update()
                        ).first()
                        if row is None:
                            new = Counter(1, now + window)
                            conn.execute(counter_table.insert().values(
                                key=key, count=1, expires_at=new.expires_at))  # fmt: skip
                            return new
                        if float(row[1]) <= now:
                            new = Counter(1, now + window)
                        else:
                            new = Counter(int(row[0]) + 1, float(row[1]))
                        conn.execute(
                            counter_table.update()
                            .where(_T.key == key)
                            .values(count=new.count, expires_at=new.expires_at)
                        )
                        return new
                except IntegrityError:
                    continue  # another process inserted the row first: count on it
        raise StorageError("counting a login failure kept conflicting; retry")

    def peek(self, key: str, *, now: float) -> Counter | None:
        """The counter of ``key`` if its window is open.

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "reading a login counter"), self.engine.connect() as conn:
            row = conn.execute(
                sa.select(_T.count, _T.expires_at).where(_T.key == key, _T.expires_at > now)
            ).first()
        return None if row is None else Counter(int(row[0]), float(row[1]))

    def clear(self, key: str) -> None:
        """Forget ``key``.

        :raises StorageError: the database failed.
        """
        with (
            map_errors(self.engine, "clearing a login counter"),
            write_transaction(self.engine) as c,
        ):
            c.execute(counter_table.delete().where(_T.key == key))

    def prune(self, *, now: float) -> int:
        """Delete counters whose window closed by ``now``; return how many.

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "pruning login counters"), write_transaction(self.engine) as c:
            return int(c.execute(counter_table.delete().where(_T.expires_at <= now)).rowcount)
