"""Shared fixtures: isolated namespaces on SQLite, PostgreSQL, MariaDB and Redis.

Engines are read from ``RISKGUARD_TEST_POSTGRES_URL``, ``RISKGUARD_TEST_MYSQL_URL`` and
``RISKGUARD_TEST_REDIS_URL`` (defaults: the servers ``scripts/services.sh`` starts).

A test that needs an engine *fails* when the engine is unreachable. A developer may opt out
locally with ``RISKGUARD_TEST_SKIP_ENGINES=postgres,mysql,redis`` (or ``all``); CI sets
``RISKGUARD_TEST_REQUIRE_ENGINES=1``, which ignores the opt-out.

Every test gets its own namespace (a PostgreSQL schema, a MariaDB database, a Redis key
prefix, a SQLite file), so tests — and several checkouts running at once — never see each
other's rows. The fixtures hand out *URLs* as well as engines so that tests can start other
processes on the same namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine, make_url

from riskguard import db

POSTGRES_URL = os.environ.get(
    "RISKGUARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RISKGUARD_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("RISKGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SQL_ENGINES = ("sqlite", "postgres", "mysql")

_reachable: dict[str, str | None] = {}


def _skip_list() -> set[str]:
    if os.environ.get("RISKGUARD_TEST_REQUIRE_ENGINES") == "1" or os.environ.get("CI"):
        return set()
    raw = os.environ.get("RISKGUARD_TEST_SKIP_ENGINES", "")
    names = {n.strip() for n in raw.split(",") if n.strip()}
    return set(SQL_ENGINES[1:]) | {"redis"} if "all" in names else names


def _probe(kind: str) -> str | None:
    """``None`` when the engine answers, else the reason it does not."""
    if kind not in _reachable:
        try:
            if kind == "redis":
                import redis

                redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
            else:
                eng = db.create_engine(POSTGRES_URL if kind == "postgres" else MYSQL_URL)
                with eng.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                eng.dispose()
            _reachable[kind] = None
        except Exception as exc:
            _reachable[kind] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return _reachable[kind]


def require_engine(kind: str) -> None:
    """Fail (or, when opted out locally, skip) the test if ``kind`` is unreachable."""
    reason = _probe(kind)
    if reason is None:
        return
    msg = (
        f"{kind} is unreachable ({reason}); start the engines with scripts/services.sh "
        f"or opt out locally with RISKGUARD_TEST_SKIP_ENGINES={kind}"
    )
    if kind in _skip_list():
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


def _namespace() -> str:
    return "rgt_" + uuid.uuid4().hex[:12]


class SqlNamespace:
    """An empty, private namespace on one SQL engine: its ``url`` and an ``engine`` on it."""

    def __init__(self, kind: str, url: str, engine: Engine) -> None:
        self.kind = kind
        self.url = url
        self.engine = engine

    def new_engine(self, **kwargs: Any) -> Engine:
        """Another engine on the same namespace (as a second process would make)."""
        return db.create_engine(self.url, **kwargs)


def _open_namespace(kind: str, tmp_path: Path) -> Iterator[SqlNamespace]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'riskguard.db'}"
        engine = db.create_engine(url)
        yield SqlNamespace(kind, url, engine)
        engine.dispose()
        return
    require_engine(kind)
    name = _namespace()
    if kind == "postgres":
        admin = db.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        url = (
            make_url(POSTGRES_URL)
            .update_query_dict({"options": f"-csearch_path={name}"})
            .render_as_string(hide_password=False)
        )
        drop = f'DROP SCHEMA "{name}" CASCADE'
    else:
        admin = db.create_engine(MYSQL_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
        drop = f"DROP DATABASE `{name}`"
    engine = db.create_engine(url)
    try:
        yield SqlNamespace(kind, url, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


_SQL_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=_SQL_PARAMS)
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlNamespace]:
    """An empty namespace on each SQL engine in turn (the test runs three times)."""
    yield from _open_namespace(request.param, tmp_path)


@pytest.fixture
def sqlite_ns(tmp_path: Path) -> Iterator[SqlNamespace]:
    """An empty SQLite database file."""
    yield from _open_namespace("sqlite", tmp_path)


@pytest.fixture
def postgres_ns(tmp_path: Path) -> Iterator[SqlNamespace]:
    """An empty PostgreSQL schema."""
    yield from _open_namespace("postgres", tmp_path)


@pytest.fixture
def mysql_ns(tmp_path: Path) -> Iterator[SqlNamespace]:
    """An empty MariaDB database."""
    yield from _open_namespace("mysql", tmp_path)


@pytest.fixture
def sql_schema(sql: SqlNamespace) -> SqlNamespace:
    """Like ``sql``, with riskguard's tables created."""
    db.create_schema(sql.engine)
    return sql


class RedisNamespace:
    """A Redis client and a key ``prefix`` private to one test (keys deleted after)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


@pytest.fixture
def redis_ns() -> Iterator[RedisNamespace]:
    """A Redis connection with a private key prefix."""
    require_engine("redis")
    ns = RedisNamespace(REDIS_URL, f"{_namespace()}:")
    try:
        yield ns
    finally:
        ns.cleanup()


@pytest.fixture
def engine_urls() -> dict[str, str]:
    """The base URLs of the test engines (for tests that create their own namespaces)."""
    return {"postgres": POSTGRES_URL, "mysql": MYSQL_URL, "redis": REDIS_URL}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that names an engine fixture gets that engine's marker, for `-m` selection.
    marks = {"postgres_ns": "postgres", "mysql_ns": "mysql", "redis_ns": "redis"}
    for item in items:
        for fixture, mark in marks.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, mark))
