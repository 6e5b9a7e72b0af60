from __future__ import annotations

import multiprocessing as mp

import pytest
import sqlalchemy as sa

from riskguard import db
from riskguard.errors import ConfigError, StorageError
from tests.conftest import RedisNamespace, SqlNamespace


def test_create_schema_and_round_trip(sql: SqlNamespace) -> None:
    assert "rg_meta" in db.missing_tables(sql.engine)
    db.create_schema(sql.engine)
    db.create_schema(sql.engine)  # idempotent
    assert db.missing_tables(sql.engine) == []
    t = db.meta_table
    with db.write_transaction(sql.engine) as conn:
        conn.execute(t.insert().values(key="probe", value="订单-✓"))
    with sql.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(t.c.key, t.c.value)).all())
    assert rows == {
        "schema_version": str(db.SCHEMA_VERSION),
        "crypto.subject_kek": "",  # the keyring's lock row
        "probe": "订单-✓",
    }


def test_write_transaction_rolls_back_whole(sql: SqlNamespace) -> None:
    db.create_schema(sql.engine)
    t = db.meta_table
    with pytest.raises(RuntimeError), db.write_transaction(sql.engine) as conn:
        conn.execute(t.insert().values(key="a", value="1"))
        raise RuntimeError("half-way")
    with sql.engine.connect() as conn:
        assert conn.execute(sa.select(t.c.key).where(t.c.key == "a")).first() is None


def test_map_errors_names_engine_not_data(sql: SqlNamespace) -> None:
    db.create_schema(sql.engine)
    t = db.meta_table
    with (
        pytest.raises(StorageError) as ei,
        db.map_errors(sql.engine, "inserting"),
        sql.engine.begin() as conn,
    ):
        conn.execute(t.insert().values(key="schema_version", value="secret-value"))
    assert ei.value.engine == db.engine_kind(sql.engine)
    assert "inserting failed" in str(ei.value)


def test_sqlite_runs_in_wal_with_busy_timeout(sqlite_ns: SqlNamespace) -> None:
    with sqlite_ns.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def _insert_many(url: str, worker: int, n: int) -> None:
    engine = db.create_engine(url)
    for i in range(n):
        with db.write_transaction(engine) as conn:
            conn.execute(db.meta_table.insert().values(key=f"w{worker}-{i}", value="x"))
    engine.dispose()


def test_sqlite_writers_in_several_processes_serialise(sqlite_ns: SqlNamespace) -> None:
    db.create_schema(sqlite_ns.engine)
    with sqlite_ns.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(db.meta_table)).scalar()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_insert_many, args=(sqlite_ns.url, w, 50)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with sqlite_ns.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(db.meta_table)).scalar()
    assert n == before + 150


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("oracle://scott@host/db", "unsupported database URL scheme"),
        ("not a url", "does not parse"),
        ("mysql+nodriver://root@localhost/test", "no driver"),
    ],
)
def test_bad_urls_are_config_errors(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as ei:
        db.create_engine(url)
    assert ei.value.key == "database.url"


def test_driverless_urls_get_riskguards_driver() -> None:
    assert db.create_engine("postgresql://u@h/d").url.drivername == "postgresql+psycopg"
    e = db.create_engine("mariadb://u@h/d")
    assert e.url.drivername == "mysql+pymysql"
    assert e.url.query["charset"] == "utf8mb4"


def test_unreachable_database_is_a_storage_error() -> None:
    engine = db.create_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(StorageError) as ei:
        db.missing_tables(engine)
    assert ei.value.engine == "postgresql"


def test_redis_round_trip(redis_ns: RedisNamespace) -> None:
    key = redis_ns.prefix + "counter"
    assert redis_ns.client.incr(key) == 1
    assert redis_ns.client.incrby(key, 4) == 5
    redis_ns.client.set(redis_ns.prefix + "s", "订单")
    assert redis_ns.client.get(redis_ns.prefix + "s").decode() == "订单"
