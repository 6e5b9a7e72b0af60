"""riskguard's own tables (prefix ``rg_``) on one SQLAlchemy :class:`MetaData`, and engines.

Each part defines its tables in its own module on :data:`metadata`; :func:`load_tables`
imports them all, so ``create_all`` and Alembic (``target_metadata``) see every table::

    # alembic env.py
    from riskguard.db import load_tables
    target_metadata = load_tables()

Supported URLs: ``sqlite:///path`` (the default; WAL mode, busy timeout), ``postgresql://``
(psycopg 3, extra ``riskguard[postgres]``), ``mysql://`` / ``mariadb://`` (PyMySQL, extra
``riskguard[mysql]``). Driver-less URLs get riskguard's driver; explicit drivers are kept.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from riskguard.errors import ConfigError, StorageError

__all__ = [
    "SCHEMA_VERSION",
    "ExactString",
    "create_engine",
    "create_schema",
    "engine_kind",
    "load_tables",
    "map_errors",
    "metadata",
    "missing_tables",
    "normalise_url",
    "target_metadata",
    "write_transaction",
]

SCHEMA_VERSION = 1

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
target_metadata = metadata

meta_table = sa.Table(
    "rg_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(1024), nullable=False),
)

# Modules that define tables on `metadata`. Each part adds its own line.
_TABLE_MODULES: tuple[str, ...] = (
    "riskguard.access._sql",
    "riskguard.audit._sql",
    "riskguard.auth._sql",
    "riskguard.auth._sql_oauth",
    "riskguard.auth._throttle_sql",
    "riskguard.crypto._tables",
)

# rg_meta rows that serialise writers: the crypto keyring's subject-KEK lock.
_LOCK_ROWS: tuple[str, ...] = ("crypto.subject_kek",)

_DRIVERS = {
    "sqlite": ("sqlite", None),
    "postgresql": ("postgresql+psycopg", "postgres"),
    "postgres": ("postgresql+psycopg", "postgres"),
    "mysql": ("mysql+pymysql", "mysql"),
    "mariadb": ("mysql+pymysql", "mysql"),
}


class ExactString(sa.TypeDecorator[str]):
    """A string compared byte for byte on every engine.

    MariaDB's and MySQL's default collations ignore case and (PAD SPACE) trailing spaces,
    so ``jti-1`` would match ``JTI-1 ``: on them the column is VARBINARY holding UTF-8.
    PostgreSQL and SQLite compare text exactly already.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.VARBINARY(self.length * 4))
        return dialect.type_descriptor(sa.String(self.length))

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> Any:
        if value is not None and dialect.name in ("mysql", "mariadb"):
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8")
        return None if value is None else str(value)


def load_tables() -> sa.MetaData:
    """Import every module that defines riskguard tables; return the shared metadata."""
    for name in _TABLE_MODULES:
        importlib.import_module(name)
    return metadata


def engine_kind(engine: Engine | Connection) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB reports ``mysql``)."""
    name = engine.dialect.name
    return "mysql" if name == "mariadb" else name


def normalise_url(raw: str) -> URL:
    """The URL with riskguard's driver filled in.

    :raises ConfigError: it does not parse or names an unsupported engine.
    """
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL does not parse: {exc}",
            key="database.url",
            hint="use sqlite:///file.db, postgresql://user@host/db or mysql://user@host/db",
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in _DRIVERS:
        raise ConfigError(
            f"unsupported database URL scheme {url.drivername!r}",
            key="database.url",
            hint="riskguard supports sqlite, postgresql and mysql/mariadb",
        )
    if not driver:
        url = url.set(drivername=_DRIVERS[backend][0])
    elif backend == "mariadb":
        url = url.set(drivername=f"mysql+{driver}")
    if url.drivername.startswith("mysql") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 5,
    busy_timeout_ms: int = 10_000,
    connect_timeout_s: int = 5,
) -> Engine:
    """An engine for riskguard's tables.

    SQLite connections run in WAL mode with ``busy_timeout``; transactions on them begin
    with ``BEGIN`` (or ``BEGIN IMMEDIATE`` inside :func:`write_transaction`), which lets
    writers from many processes serialise on the database lock instead of failing.

    :raises ConfigError: the URL does not parse, names an unsupported engine, or its driver
        extra is not installed.
    """
    u = normalise_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    try:
        engine = sa.create_engine(u, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        extra = _DRIVERS.get(backend, (None, None))[1]
        raise ConfigError(
            f"no driver for {u.drivername!r}: {exc}",
            key="database.url",
            hint=f"pip install 'riskguard[{extra}]'" if extra else None,
        ) from None
    if backend == "sqlite":
        _configure_sqlite(engine, busy_timeout_ms)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own transaction
        # handling would defer it and cannot do BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def map_errors(
    engine: Engine | Connection | None = None, what: str = "database operation"
) -> Iterator[None]:
    """Turn SQLAlchemy errors into :class:`StorageError` naming the engine, never the data."""
    try:
        yield
    except SQLAlchemyError as exc:
        kind = engine_kind(engine) if engine is not None else None
        orig = getattr(exc, "orig", None)
        detail = type(orig).__name__ if orig is not None else type(exc).__name__
        raise StorageError(
            f"{what} failed ({detail}): {_first_line(orig or exc)}", engine=kind
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that serialises writers: ``BEGIN IMMEDIATE`` on SQLite.

    On PostgreSQL and MariaDB it is an ordinary transaction; callers lock their head row with
    ``SELECT … FOR UPDATE`` (``.with_for_update()``). Commits on success, rolls back whole on
    any exception.
    """
    with engine.connect() as conn:
        if engine_kind(engine) == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def create_schema(engine: Engine) -> None:
    """Create every riskguard table that is missing and record the schema version.

    :raises StorageError: the database is unreachable or refuses DDL.
    """
    md = load_tables()
    with map_errors(engine, "creating riskguard's tables"):
        md.create_all(engine)
        with engine.begin() as conn:
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).first()
            if row is None:
                conn.execute(
                    meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
            # Rows that writers lock (they must exist before anyone locks them).
            present = set(
                conn.execute(
                    sa.select(meta_table.c.key).where(meta_table.c.key.in_(_LOCK_ROWS))
                ).scalars()
            )
            for key in _LOCK_ROWS:
                if key not in present:
                    conn.execute(meta_table.insert().values(key=key, value=""))


def missing_tables(engine: Engine) -> list[str]:
    """Names of riskguard tables the database does not have (empty when the schema is whole).

    :raises StorageError: the database is unreachable.
    """
    md = load_tables()
    with map_errors(engine, "inspecting the schema"):
        present = set(sa.inspect(engine).get_table_names())
    return sorted(name for name in md.tables if name not in present)
