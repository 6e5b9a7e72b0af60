"""SqlPolicy: the policy in ``rg_access_policy`` on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from riskguard.access import (
    AccessControl,
    FilePolicy,
    MemoryPolicy,
    PolicyLine,
    SqlPolicy,
    parse_policy_text,
    read_model,
)
from riskguard.access._sql import policy_table
from riskguard.errors import PolicyError, StorageError
from tests.conftest import SqlNamespace
from tests.doubles import RecordingAudit

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = POLICIES / "model.conf"
POLICY = POLICIES / "policy.csv"

SMALL = """\
# a comment and a blank line do not become rows

p, customer, *, order, read, owner, allow
p, merchant_staff, *, order, *, *, allow
g, alice, customer, *
g, sam, merchant_staff, m:1001
"""


def _rows(lines: list[PolicyLine]) -> list[tuple[str, tuple[str, ...]]]:
    return [(pl.ptype, pl.values) for pl in lines]


def test_round_trip_keeps_order_and_numbers_lines_by_position(sql_schema: SqlNamespace) -> None:
    model = read_model(MODEL)
    original = FilePolicy(POLICY).load()
    store = SqlPolicy(sql_schema.engine)
    assert store.replace(original, model=model) == 1
    # another engine, as another process would see it
    other = sql_schema.new_engine()
    try:
        loaded = SqlPolicy(other).load()
    finally:
        other.dispose()
    assert _rows(loaded) == _rows(original)
    assert [pl.line for pl in loaded] == list(range(1, len(original) + 1))
    assert {pl.source for pl in loaded} == {"sql:default"}
    assert loaded[11].location == "sql:default:12"
    # the enforcer decides the same and names the stored positions
    from_file = AccessControl(MODEL, POLICY)
    from_sql = AccessControl(MODEL, store)
    assert from_sql.policy_hash == from_file.policy_hash
    d_file = from_file.decide("dave", "m:1001", "order", "read", owner="dave")
    d_sql = from_sql.decide("dave", "m:1001", "order", "read", owner="dave")
    assert d_sql.allowed is d_file.allowed is False
    rule = d_sql.rule
    assert rule is not None and d_sql.reason.startswith(f"denied by sql:default:{rule.line}")
    assert _rows([rule]) == _rows([original[rule.line - 1]])


def test_dump_is_csv_whose_line_n_is_position_n(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(SMALL, "small.csv"))
    text = store.dump()
    assert text.splitlines()[2] == "g, alice, customer, *"
    again = parse_policy_text(text)
    assert [(pl.line, pl.ptype, pl.values) for pl in again] == [
        (pl.line, pl.ptype, pl.values) for pl in store.load()
    ]


def test_replace_bumps_the_version_marker(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    assert (store.marker(), store.version()) == (None, 0)
    store.replace(parse_policy_text(SMALL))
    first = store.marker()
    assert first is not None and store.version() == 1
    assert store.replace(parse_policy_text(SMALL)) == 2  # same lines: still a new version
    assert store.marker() not in (None, first) and store.version() == 2
    # another name has its own version and lines
    other = SqlPolicy(sql_schema.engine, name="staging")
    assert other.marker() is None
    other.replace(parse_policy_text(SMALL)[:1])
    assert (other.version(), len(other.load()), len(store.load())) == (1, 1, 4)


def _broken(text: str, line: str) -> list[PolicyLine]:
    return parse_policy_text(text + line + "\n", "policy.csv")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("p, customer, *, order, read, owner, alow", "unknown effect 'alow'"),
        ("p, customer, *, order, read, owner", "p rule has 5 fields"),
        ("x, alice, customer, *", "unknown policy type 'x'"),
        ("g, customer, alice, *", "role cycle: alice → customer → alice"),
    ],
)
def test_an_invalid_line_is_refused_with_its_position_and_nothing_written(
    sql_schema: SqlNamespace, bad: str, message: str
) -> None:
    model = read_model(MODEL)
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(SMALL), model=model)
    before = (store.marker(), store.load())
    lines = _broken(SMALL, bad)
    with pytest.raises(PolicyError) as err:
        store.replace(lines, model=model)
    e = err.value
    assert message in e.message
    assert (e.path, e.line) == ("sql:default", 5)  # the fifth line, where it would be stored
    assert "sql:default:5" in str(e)
    assert e.hint is not None and "from policy.csv:7" in e.hint  # where it came from
    assert (store.marker(), store.load()) == before


def test_an_invalid_first_policy_leaves_nothing_stored(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    with pytest.raises(PolicyError, match="unknown effect"):
        store.replace(_broken(SMALL, "p, a, *, o, r, *, maybe"), model=read_model(MODEL))
    assert store.marker() is None
    with pytest.raises(PolicyError, match="no access policy named 'default'") as err:
        store.load()
    assert err.value.path == "sql:default" and "push" in (err.value.hint or "")
    with pytest.raises(PolicyError, match="no lines"):
        store.replace([])


def test_a_rule_longer_than_the_table_is_an_error(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(SMALL))
    rows = [("p", "a", "*", "o", "r", "*", "allow"), ("p", "a", "*", "o", "r", "*", "x", "allow")]
    with pytest.raises(PolicyError) as err:
        store.replace(MemoryPolicy(rows).load())  # no model: the table's own limit
    assert "7 fields; the table holds at most 6 (v0 to v5)" in err.value.message
    assert (err.value.path, err.value.line) == ("sql:default", 2)
    assert err.value.hint == "from <memory>:2"
    assert store.version() == 1 and len(store.load()) == 4


@pytest.mark.parametrize(
    "value",
    [" lead", "trail ", "a,b", "two\nlines", "nul\x00", "open(", "close]", "x" * 256],
    ids=["lead", "trail", "comma", "newline", "nul", "open", "close", "long"],
)
def test_values_a_csv_line_cannot_hold_are_refused(sql_schema: SqlNamespace, value: str) -> None:
    store = SqlPolicy(sql_schema.engine)
    with pytest.raises(PolicyError, match="v1") as err:
        store.replace([PolicyLine("p", ("a", value, "o", "r", "*", "allow"))])
    assert err.value.line == 1
    assert store.marker() is None


def test_bracketed_commas_and_empty_values_round_trip(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    lines = [PolicyLine("p", ("a", "keyMatch(x, y)", "[1, 2]", "", "*", "allow"))]
    store.replace(lines)
    (back,) = store.load()
    assert back.values == lines[0].values
    assert parse_policy_text(store.dump())[0].values == lines[0].values


def test_names_and_values_are_compared_as_exact_bytes(sql_schema: SqlNamespace) -> None:
    # MariaDB's default collation ignores case: "OPS" would find, and replace() would
    # delete, the rows of "ops"; and "Alice" would be "alice".
    lower = SqlPolicy(sql_schema.engine, name="ops")
    upper = SqlPolicy(sql_schema.engine, name="OPS")
    lower.replace(parse_policy_text("p, r, *, o, read, *, allow\ng, alice, r, *\n"))
    upper.replace(parse_policy_text("p, r, *, o, read, *, allow\ng, Alice, r, *\ng, Ünï, r, *\n"))
    upper.replace(parse_policy_text("p, r, *, o, read, *, allow\ng, Alice, r, *\ng, Ünï, r, *\n"))
    assert [pl.values[0] for pl in lower.load()] == ["r", "alice"]
    assert [pl.values[0] for pl in upper.load()] == ["r", "Alice", "Ünï"]
    assert (lower.version(), upper.version()) == (1, 2)
    ac = AccessControl(MODEL, upper)
    assert ac.enforce("Alice", "d", "o", "read") and not ac.enforce("alice", "d", "o", "read")
    assert SqlPolicy(sql_schema.engine, name="Ops").marker() is None


@pytest.mark.parametrize("name", ["", "a/b", "sql name", "x" * 65])
def test_bad_policy_names_are_refused(sql_schema: SqlNamespace, name: str) -> None:
    with pytest.raises(ValueError, match="policy name"):
        SqlPolicy(sql_schema.engine, name=name)


def test_a_row_with_a_gap_is_an_error_naming_its_position(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(SMALL))
    with sql_schema.engine.begin() as conn:  # written by some other tool
        conn.execute(
            policy_table.update()
            .where(policy_table.c.position == 3)
            .values(v1=None, v2="customer", v3="*")
        )
    with pytest.raises(PolicyError, match="v1 is NULL") as err:
        store.load()
    assert (err.value.path, err.value.line) == ("sql:default", 3)


def test_import_csv_keeps_file_order_and_refuses_a_bad_file(
    sql_schema: SqlNamespace, tmp_path: Path
) -> None:
    store = SqlPolicy(sql_schema.engine)
    assert store.import_csv(POLICY, model=read_model(MODEL)) == 1
    assert _rows(store.load()) == _rows(FilePolicy(POLICY).load())
    bad = tmp_path / "bad.csv"
    bad.write_text("p, a, *, o, r, *, allow\np, a], *, o, r, *, allow\n", encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        store.import_csv(bad)
    assert (Path(err.value.path or "").name, err.value.line) == ("bad.csv", 2)
    assert store.version() == 1


def test_without_the_table_reads_are_storage_errors(sql: SqlNamespace) -> None:
    store = SqlPolicy(sql.engine)
    with pytest.raises(StorageError) as err:
        store.load()
    assert err.value.engine == ("mysql" if sql.kind == "mysql" else sql.engine.dialect.name)
    with pytest.raises(StorageError):
        store.marker()
    with pytest.raises(StorageError):
        store.replace(parse_policy_text(SMALL))


def test_a_database_failure_on_reload_keeps_the_policy_and_is_audited(
    sql_schema: SqlNamespace,
) -> None:
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(SMALL))
    audit = RecordingAudit()
    ac = AccessControl(MODEL, store, audit=audit)
    good = ac.policy_hash
    with sql_schema.engine.begin() as conn:
        policy_table.drop(conn)
    with pytest.raises(StorageError):
        ac.reload()
    (ev,) = audit.events
    assert (ev.action, ev.outcome) == ("policy.reload", "failure")
    assert ev.details == {"previous": good}
    assert ev.reason is not None and "reading the access policy failed" in ev.reason
    assert ac.policy_hash == good and ac.enforce("alice", "d", "order", "read", owner="alice")


def test_concurrent_writers_serialise_and_readers_see_whole_policies(
    sql_schema: SqlNamespace,
) -> None:
    a = parse_policy_text("p, a, *, o, read, *, allow\ng, u, a, *\n")
    b = parse_policy_text("p, b, *, o, read, *, allow\np, b, *, o, write, *, allow\ng, u, b, *\n")
    store = SqlPolicy(sql_schema.engine)
    store.replace(a)
    writes, errors, seen = 8, [], set()
    stop = threading.Event()

    def write(lines: list[PolicyLine]) -> None:
        try:
            for _ in range(writes):
                store.replace(lines)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                seen.add(tuple(_rows(store.load())))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(x,)) for x in (a, b)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    reader.join(60)
    assert errors == []
    assert store.version() == 1 + 2 * writes  # no write lost
    assert seen <= {tuple(_rows(a)), tuple(_rows(b))}  # never half of one and half of the other
    assert tuple(_rows(store.load())) in seen | {tuple(_rows(a)), tuple(_rows(b))}


def test_the_schema_has_the_policy_tables(sql_schema: SqlNamespace) -> None:
    names = set(sa.inspect(sql_schema.engine).get_table_names())
    assert {"rg_access_policy", "rg_access_policy_version"} <= names
