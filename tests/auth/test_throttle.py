"""Login throttling: one suite over the memory, SQLite, PostgreSQL, MariaDB and Redis
counter stores; time is always passed as ``now=``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from riskguard import db
from riskguard.audit import AuditLog, MemoryStore, SearchFilter
from riskguard.auth import (
    Counter,
    CounterStore,
    LoginGuard,
    LoginThrottled,
    MemoryCounterStore,
    SqlCounterStore,
    ThrottlePolicy,
)
from riskguard.errors import ConfigError

T0 = 1_750_000_000.0
IP = "198.51.100.23"


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[CounterStore]:
    kind = request.param
    if kind == "memory":
        yield MemoryCounterStore()
    elif kind == "redis":
        from riskguard.auth import RedisCounterStore

        ns = request.getfixturevalue("redis_ns")
        yield RedisCounterStore(ns.client, prefix=ns.prefix)
    else:
        ns = request.getfixturevalue(f"{kind}_ns")
        db.create_schema(ns.engine)
        yield SqlCounterStore(ns.engine)


def guard(store: CounterStore, log: AuditLog | None = None, **account: Any) -> LoginGuard:
    policy = ThrottlePolicy(
        **{"max_failures": 3, "window": 600, "lockout": 60, "max_lockout": 300, **account}
    )
    return LoginGuard(
        store,
        account=policy,
        ip=ThrottlePolicy(max_failures=10, window=600, lockout=120),
        key_secret=b"k" * 32,
        audit=log,
    )


# -- the counter store contract ----------------------------------------------------------------


def test_counter_counts_within_its_window(store: CounterStore) -> None:
    assert store.peek("k", now=T0) is None
    assert store.hit("k", window=10, now=T0) == Counter(1, T0 + 10)
    assert store.hit("k", window=10, now=T0 + 5) == Counter(2, T0 + 10)  # window is fixed
    assert store.peek("k", now=T0 + 9.5) == Counter(2, T0 + 10)
    assert store.peek("k", now=T0 + 10) is None
    assert store.hit("k", window=10, now=T0 + 10) == Counter(1, T0 + 20)  # a new window
    assert store.peek("other", now=T0) is None


def test_counter_clear(store: CounterStore) -> None:
    store.hit("k", window=10, now=T0)
    store.clear("k")
    store.clear("never-set")
    assert store.peek("k", now=T0) is None
    assert store.hit("k", window=10, now=T0).count == 1


def test_concurrent_hits_are_each_counted(store: CounterStore) -> None:
    def work() -> None:
        for _ in range(10):
            store.hit("busy", window=60, now=T0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counter = store.peek("busy", now=T0)
    assert counter is not None and counter.count == 40


# -- the guard -----------------------------------------------------------------------------------


def test_lockout_after_max_failures(store: CounterStore) -> None:
    g = guard(store)
    for i in range(2):
        assert g.record_failure("acct-1", IP, now=T0 + i).locked_for is None
        g.check("acct-1", IP, now=T0 + i)
    result = g.record_failure("acct-1", IP, now=T0 + 2)
    assert result.locked_for == 60 and result.failures == 3
    with pytest.raises(LoginThrottled) as info:
        g.check("acct-1", IP, now=T0 + 3)
    assert info.value.retry_after == 59 and info.value.scope == "account"
    assert info.value.code == "login_throttled"
    g.check("acct-2", IP, now=T0 + 3)  # other accounts from the same IP are fine
    g.check("acct-1", IP, now=T0 + 62)  # the lockout ended


def test_lockout_doubles_and_is_capped(store: CounterStore) -> None:
    g = guard(store)
    t = T0
    lengths = []
    for _ in range(4):
        for _ in range(3):
            result = g.record_failure("acct-1", None, now=t)
        assert result.locked_for is not None
        lengths.append(result.locked_for)
        t += result.locked_for + 1
    assert lengths == [60, 120, 240, 300]


def test_failures_outside_the_window_do_not_add_up(store: CounterStore) -> None:
    g = guard(store)
    g.record_failure("acct-1", None, now=T0)
    g.record_failure("acct-1", None, now=T0 + 1)
    assert g.record_failure("acct-1", None, now=T0 + 601).failures == 1  # new window
    g.check("acct-1", None, now=T0 + 602)


def test_success_clears_the_account_but_not_the_ip(store: CounterStore) -> None:
    g = guard(store)
    for i in range(2):
        g.record_failure("acct-1", IP, now=T0 + i)
    g.record_success("acct-1", IP, now=T0 + 2)
    assert g.record_failure("acct-1", IP, now=T0 + 3).failures == 1
    # The IP kept counting: 3 failures so far, 7 more from other accounts lock it.
    for i in range(7):
        g.record_failure(f"acct-{i + 10}", IP, now=T0 + 4)
    with pytest.raises(LoginThrottled) as info:
        g.check("acct-99", IP, now=T0 + 5)
    assert info.value.scope == "ip" and info.value.retry_after == 119
    g.check("acct-99", "203.0.113.1", now=T0 + 5)


def test_unknown_account_is_throttled_by_ip(store: CounterStore) -> None:
    g = guard(store)
    for _ in range(10):
        g.record_failure(None, IP, now=T0)
    with pytest.raises(LoginThrottled):
        g.check(None, IP, now=T0 + 1)


def test_counter_keys_hold_no_account_or_ip() -> None:
    store = MemoryCounterStore()
    guard(store).record_failure("alice@example.com", IP, now=T0)
    keys = list(store._counters)
    assert keys and not any("alice" in k or IP in k for k in keys)


def test_login_events_are_audited_without_secrets() -> None:
    log = AuditLog(MemoryStore())
    g = guard(MemoryCounterStore(), log)
    g.record_success("acct-1", IP, now=T0)
    for _ in range(3):
        g.record_failure("acct-1", IP, now=T0)
    with pytest.raises(LoginThrottled):
        g.check("acct-1", IP, now=T0 + 1)
    events = log.search(SearchFilter(action="auth.login"), newest_first=False)
    assert [e.outcome for e in events] == ["success", "failure", "failure", "failure", "deny"]
    assert all(e.actor is not None and e.actor["id"] == "acct-1" for e in events)
    assert events[3].details["locked_for"] == 60
    assert events[4].reason == "throttled"
    for event in events:
        assert "password" not in event.details_json and IP not in event.details_json


@pytest.mark.parametrize(
    "options",
    [
        {"max_failures": 0},
        {"window": -1},
        {"lockout": float("nan")},
        {"lockout": 600, "max_lockout": 60},
        {"max_failures": True},
    ],
)
def test_bad_policy(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ThrottlePolicy(**options)


def test_short_key_secret_refused() -> None:
    with pytest.raises(ConfigError):
        LoginGuard(MemoryCounterStore(), key_secret=b"short")
