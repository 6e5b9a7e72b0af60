"""One suite for every auth store: memory, SQLite, PostgreSQL, MariaDB and Redis.

Each test runs once per backend (``backend`` fixture). Expiry is driven by ``now=``; where
Redis expires keys itself (TTL in real time), the test reads the TTL instead of pruning.
Concurrency tests race real threads, half of them on a second engine or client, as a
second process would be.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from riskguard import db
from riskguard.auth import (
    DenyListStore,
    MemoryDenyList,
    MemoryRefreshTokenStore,
    MemoryReplayCache,
    RefreshRecord,
    RefreshTokenStore,
    ReplayCache,
    RotateResult,
    SqlDenyList,
    SqlRefreshTokenStore,
    SqlReplayCache,
    hash_refresh_token,
)
from riskguard.auth._refresh import MAX_LEEWAY
from riskguard.errors import StorageError

NOW = 1_750_000_000.25  # a fraction, to check that times survive storage exactly

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@dataclass
class Stores:
    """One backend's three stores, and a factory for the same stores on a new connection."""

    kind: str
    deny: DenyListStore
    refresh: RefreshTokenStore
    replay: ReplayCache
    other: Callable[[], Stores]
    redis: Any = None
    prefix: str = ""

    @property
    def ttl_based(self) -> bool:
        return self.kind == "redis"

    def pttl(self, key: str) -> int:
        return int(self.redis.pttl(self.prefix + key))


def _sql_stores(kind: str, engine: Any, other: Callable[[], Stores]) -> Stores:
    return Stores(kind, SqlDenyList(engine), SqlRefreshTokenStore(engine), SqlReplayCache(engine),
                  other)  # fmt: skip


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Stores]:
    kind = request.param
    if kind == "memory":
        mem = Stores(kind, MemoryDenyList(), MemoryRefreshTokenStore(), MemoryReplayCache(),
                     lambda: mem)  # fmt: skip
        yield mem
    elif kind == "redis":
        from riskguard.auth import RedisDenyList, RedisRefreshTokenStore, RedisReplayCache

        ns = request.getfixturevalue("redis_ns")
        clients: list[Any] = []

        def make(client: Any) -> Stores:
            return Stores(
                kind,
                RedisDenyList(client, prefix=ns.prefix),
                RedisRefreshTokenStore(client, prefix=ns.prefix),
                RedisReplayCache(client, prefix=ns.prefix),
                other,
                client,
                ns.prefix,
            )

        def other() -> Stores:
            import redis

            clients.append(redis.Redis.from_url(ns.url))
            return make(clients[-1])

        yield make(ns.client)
        for c in clients:
            c.close()
    else:
        ns = request.getfixturevalue(f"{kind}_ns")
        db.create_schema(ns.engine)
        engines: list[Any] = []

        def other_sql() -> Stores:
            engines.append(ns.new_engine())
            return _sql_stores(kind, engines[-1], other_sql)

        yield _sql_stores(kind, ns.engine, other_sql)
        for e in engines:
            e.dispose()


def record(family: str = "fam-1", generation: int = 1, **overrides: Any) -> RefreshRecord:
    base: dict[str, Any] = {
        "token_hash": hash_refresh_token(f"{family}/{generation}"),
        "family_id": family,
        "generation": generation,
        "client_id": "rider-app",
        "subject": "u-1001",
        "subject_type": "user",
        "scope": "orders:read orders:write",
        "audience": "orders-api",
        "issued_at": NOW,
        "expires_at": NOW + 3600,
        "family_issued_at": NOW,
        "tenant": "merchant-42",
        "roles": ("customer", "vip"),
        "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
        "claims": {"acr": "urn:o2o:pwd", "amr": ["pwd", "otp"], "ext": {"n": 1}},
        "access_jti": f"at-{family}-{generation}",
        "access_exp": NOW + 300,
    }
    base.update(overrides)
    return RefreshRecord(**base)


def successor(rec: RefreshRecord, *, now: float, tag: str = "", **overrides: Any) -> RefreshRecord:
    gen = rec.generation + 1
    return replace(
        rec,
        token_hash=hash_refresh_token(f"{rec.family_id}/{gen}{tag}"),
        generation=gen,
        issued_at=now,
        expires_at=now + 3600,
        access_jti=f"at-{rec.family_id}-{gen}{tag}",
        access_exp=now + 300,
        **overrides,
    )


def jtis(result: RotateResult | tuple[Any, ...] | None) -> set[str]:
    refs = result.access_tokens if isinstance(result, RotateResult) else result
    assert refs is not None
    return {r.jti for r in refs}


# -- deny-list -----------------------------------------------------------------------------


def test_deny_list_revokes_exactly_the_given_jti(backend: Stores) -> None:
    assert isinstance(backend.deny, DenyListStore)
    assert not backend.deny.is_revoked("jti-1")
    backend.deny.revoke("jti-1", expires_at=NOW + 300, now=NOW)
    assert backend.deny.is_revoked("jti-1")
    assert not backend.deny.is_revoked("jti-2")
    # Ids compare exactly on every engine (MariaDB's default collation would not).
    assert not backend.deny.is_revoked("JTI-1")
    assert not backend.deny.is_revoked("jti-1 ")


def test_deny_list_stores_nothing_for_a_token_already_past_its_expiry(backend: Stores) -> None:
    backend.deny.revoke("at-the-edge", expires_at=NOW, now=NOW)
    backend.deny.revoke("long-gone", expires_at=NOW - 3600, now=NOW)
    assert not backend.deny.is_revoked("at-the-edge")
    assert not backend.deny.is_revoked("long-gone")


def test_deny_list_entries_expire_with_the_token(backend: Stores) -> None:
    backend.deny.revoke("short", expires_at=NOW + 100, now=NOW)
    backend.deny.revoke("long", expires_at=NOW + 200, now=NOW)
    backend.deny.revoke("forever", expires_at=None, now=NOW)
    if backend.ttl_based:
        assert 99_000 < backend.pttl("deny:short") <= 100_000
        assert 199_000 < backend.pttl("deny:long") <= 200_000
        assert backend.pttl("deny:forever") == -1
    else:
        prune = backend.deny.prune  # type: ignore[attr-defined]
        assert prune(now=NOW + 99) == 0
        assert prune(now=NOW + 100) == 1
        assert not backend.deny.is_revoked("short")
        assert backend.deny.is_revoked("long")
        assert prune(now=NOW + 10**9) == 1
    assert backend.deny.is_revoked("forever")


def test_revoking_again_keeps_the_later_expiry(backend: Stores) -> None:
    backend.deny.revoke("j", expires_at=NOW + 100, now=NOW)
    backend.deny.revoke("j", expires_at=NOW + 50, now=NOW)  # never shortens
    if backend.ttl_based:
        assert backend.pttl("deny:j") > 99_000
    else:
        backend.deny.prune(now=NOW + 60)  # type: ignore[attr-defined]
        assert backend.deny.is_revoked("j")
    backend.deny.revoke("j", expires_at=NOW + 500, now=NOW)  # lengthens
    if backend.ttl_based:
        assert backend.pttl("deny:j") > 499_000
    else:
        backend.deny.prune(now=NOW + 200)  # type: ignore[attr-defined]
        assert backend.deny.is_revoked("j")
    backend.deny.revoke("j", expires_at=None, now=NOW)  # for ever beats any time
    backend.deny.revoke("j", expires_at=NOW + 10, now=NOW)
    if backend.ttl_based:
        assert backend.pttl("deny:j") == -1
    else:
        backend.deny.prune(now=NOW + 10**9)  # type: ignore[attr-defined]
    assert backend.deny.is_revoked("j")


@pytest.mark.parametrize("jti", ["", "x" * 256, None, 42])
def test_deny_list_refuses_malformed_jtis(backend: Stores, jti: Any) -> None:
    with pytest.raises(ValueError, match="jti"):
        backend.deny.revoke(jti, expires_at=NOW + 10, now=NOW)


def test_deny_list_keeps_the_longest_and_unusual_jtis(backend: Stores) -> None:
    for jti in ("j" * 255, "ünïcødé-jti", "with:colons and spaces"):
        backend.deny.revoke(jti, expires_at=NOW + 10, now=NOW)
        assert backend.deny.is_revoked(jti)


# -- refresh tokens: create, get, rotate -------------------------------------------------


def test_a_created_record_reads_back_whole(backend: Stores) -> None:
    rec = record()
    backend.refresh.create(rec)
    assert isinstance(backend.refresh, RefreshTokenStore)
    assert backend.refresh.get(rec.token_hash) == rec
    assert backend.refresh.get(hash_refresh_token("never issued")) is None
    bare = record("fam-bare", tenant=None, roles=(), jkt=None, claims={}, access_jti=None,
                  access_exp=None, subject_type="service")  # fmt: skip
    backend.refresh.create(bare)
    assert backend.refresh.get(bare.token_hash) == bare


def test_a_family_or_token_cannot_be_created_twice(backend: Stores) -> None:
    rec = record()
    backend.refresh.create(rec)
    with pytest.raises(StorageError):
        backend.refresh.create(replace(rec, token_hash=hash_refresh_token("other")))
    with pytest.raises(StorageError):
        backend.refresh.create(replace(rec, family_id="fam-other"))
    assert backend.refresh.get(hash_refresh_token("other")) is None


def test_rotation_marks_the_token_used_and_stores_its_successor(backend: Stores) -> None:
    rec = record()
    backend.refresh.create(rec)
    nxt = successor(rec, now=NOW + 10)
    result = backend.refresh.rotate(rec.token_hash, nxt, now=NOW + 10)
    assert result == RotateResult("rotated", rec)
    assert backend.refresh.get(rec.token_hash) == replace(rec, used_at=NOW + 10)
    assert backend.refresh.get(nxt.token_hash) == nxt
    third = successor(nxt, now=NOW + 20)
    assert backend.refresh.rotate(nxt.token_hash, third, now=NOW + 20).status == "rotated"


def test_reuse_revokes_the_family_and_returns_its_access_tokens(backend: Stores) -> None:
    rec = record()
    backend.refresh.create(rec)
    gen2 = successor(rec, now=NOW + 10)
    backend.refresh.rotate(rec.token_hash, gen2, now=NOW + 10)
    gen3 = successor(gen2, now=NOW + 20)
    backend.refresh.rotate(gen2.token_hash, gen3, now=NOW + 20)
    other = record("fam-2")
    backend.refresh.create(other)

    attacker = successor(rec, now=NOW + 30, tag="-attacker")
    reused = backend.refresh.rotate(rec.token_hash, attacker, now=NOW + 30)
    assert reused.status == "reused"
    assert reused.record is not None and reused.record.family_id == "fam-1"
    assert jtis(reused) == {"at-fam-1-1", "at-fam-1-2", "at-fam-1-3"}
    assert backend.refresh.get(attacker.token_hash) is None  # nothing issued to the reuser
    for rec_ in (rec, gen2, gen3):
        got = backend.refresh.get(rec_.token_hash)
        assert got is not None and got.revoked_at == NOW + 30
    # The live end of the chain is dead too, and says why; the other family is untouched.
    late = backend.refresh.rotate(gen3.token_hash, successor(gen3, now=NOW + 40), now=NOW + 40)
    assert late.status == "revoked" and jtis(late) == jtis(reused)
    assert backend.refresh.rotate(other.token_hash, successor(other, now=NOW + 40),
                                  now=NOW + 40).status == "rotated"  # fmt: skip


def test_a_revoked_family_reports_only_access_tokens_that_may_still_be_accepted(
    backend: Stores,
) -> None:
    rec = record(access_exp=NOW + 300)
    backend.refresh.create(rec)
    gen2 = successor(rec, now=NOW + 1000)
    backend.refresh.rotate(rec.token_hash, gen2, now=NOW + 1000)
    # At NOW + 1000 the first access token is 700 s past exp: beyond any leeway.
    assert NOW + 300 < NOW + 1000 - MAX_LEEWAY
    refs = backend.refresh.revoke_family("fam-1", now=NOW + 1000, reason="logout")
    assert jtis(refs) == {"at-fam-1-2"}
    assert refs is not None and refs[0].expires_at == NOW + 1300


def test_an_expired_token_is_refused_without_touching_the_family(backend: Stores) -> None:
    rec = record(expires_at=NOW + 100)
    backend.refresh.create(rec)
    assert backend.refresh.rotate(rec.token_hash, successor(rec, now=NOW + 99.5),
                                  now=NOW + 99.5).status == "rotated"  # fmt: skip
    rec2 = record("fam-2", expires_at=NOW + 100)
    backend.refresh.create(rec2)
    result = backend.refresh.rotate(rec2.token_hash, successor(rec2, now=NOW + 100), now=NOW + 100)
    assert result == RotateResult("expired", rec2)
    assert backend.refresh.get(rec2.token_hash) == rec2  # not used, not revoked


def test_an_unknown_token_rotates_nothing(backend: Stores) -> None:
    ghost = record("fam-ghost")
    result = backend.refresh.rotate(ghost.token_hash, successor(ghost, now=NOW), now=NOW)
    assert result == RotateResult("unknown")
    assert backend.refresh.get(successor(ghost, now=NOW).token_hash) is None


@pytest.mark.parametrize(
    "change",
    [{"family_id": "fam-other"}, {"generation": 3}, {"generation": 1}],
    ids=["other-family", "skipped-generation", "same-generation"],
)
def test_a_successor_must_continue_the_family(backend: Stores, change: dict[str, Any]) -> None:
    rec = record()
    backend.refresh.create(rec)
    bad = replace(successor(rec, now=NOW + 1), **change)
    with pytest.raises(ValueError, match="successor"):
        backend.refresh.rotate(rec.token_hash, bad, now=NOW + 1)
    assert backend.refresh.get(rec.token_hash) == rec
    with pytest.raises(ValueError, match="successor"):
        backend.refresh.rotate(rec.token_hash, replace(rec, generation=2), now=NOW + 1)


def test_revoking_a_family_is_idempotent_and_keeps_the_first_time(backend: Stores) -> None:
    rec = record()
    backend.refresh.create(rec)
    assert backend.refresh.revoke_family("fam-unknown", now=NOW, reason="logout") is None
    assert jtis(backend.refresh.revoke_family("fam-1", now=NOW + 5, reason="logout")) == {
        "at-fam-1-1"
    }
    again = backend.refresh.revoke_family("fam-1", now=NOW + 9, reason="admin")
    assert jtis(again) == {"at-fam-1-1"}
    got = backend.refresh.get(rec.token_hash)
    assert got is not None and got.revoked_at == NOW + 5
    result = backend.refresh.rotate(rec.token_hash, successor(rec, now=NOW + 10), now=NOW + 10)
    assert result.status == "revoked"


def test_expired_tokens_and_families_go_away(backend: Stores) -> None:
    rec = record(expires_at=NOW + 100)
    backend.refresh.create(rec)
    gen2 = successor(rec, now=NOW + 50)
    backend.refresh.rotate(rec.token_hash, gen2, now=NOW + 50)  # gen2 expires at NOW + 3650
    if backend.ttl_based:
        assert 99_000 < backend.pttl(f"rt:{rec.token_hash}") <= 100_000
        assert 3_599_000 < backend.pttl(f"rt:{gen2.token_hash}") <= 3_600_000
        assert 3_599_000 < backend.pttl("rf:fam-1") <= 3_600_000  # follows its newest token
        assert backend.refresh.prune(now=NOW + 10**9) == 0
        return
    assert backend.refresh.prune(now=NOW + 99) == 0
    assert backend.refresh.prune(now=NOW + 100) == 1
    assert backend.refresh.get(rec.token_hash) is None
    assert backend.refresh.get(gen2.token_hash) == gen2
    assert backend.refresh.prune(now=NOW + 3650) == 1
    assert backend.refresh.revoke_family("fam-1", now=NOW + 3651, reason="x") is None
    backend.refresh.create(record())  # the family id is free again


# -- refresh tokens: concurrency ---------------------------------------------------------


def _race(
    backend: Stores, rec: RefreshRecord, threads: int
) -> list[tuple[RotateResult, RefreshRecord]]:
    """``threads`` threads rotate ``rec`` at once, half through a second connection."""
    stores = [backend.refresh if i % 2 == 0 else backend.other().refresh for i in range(threads)]
    barrier = threading.Barrier(threads)
    results: list[tuple[RotateResult, RefreshRecord]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def use(i: int) -> None:
        nxt = successor(rec, now=NOW + 1, tag=f"-t{i}")
        try:
            barrier.wait(timeout=30)
            result = stores[i].rotate(rec.token_hash, nxt, now=NOW + 1)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)
            return
        with lock:
            results.append((result, nxt))

    workers = [threading.Thread(target=use, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    if errors:
        raise errors[0]
    assert len(results) == threads
    return results


@pytest.mark.parametrize("round_", range(4))
def test_two_concurrent_uses_of_one_token_give_one_rotation_and_one_reuse(
    backend: Stores, round_: int
) -> None:
    rec = record(f"fam-race-{round_}")
    backend.refresh.create(rec)
    results = _race(backend, rec, 2)
    assert sorted(r.status for r, _ in results) == ["reused", "rotated"]
    winner = next(nxt for r, nxt in results if r.status == "rotated")
    reuse, loser = next((r, nxt) for r, nxt in results if r.status == "reused")
    # The reuse saw the winner's successor, committed while it waited: that access token
    # is handed back for the deny-list too.
    assert jtis(reuse) == {rec.access_jti, winner.access_jti}
    refs = backend.refresh.revoke_family(rec.family_id, now=NOW + 2, reason="check")
    assert jtis(refs) == {rec.access_jti, winner.access_jti}
    assert backend.refresh.get(loser.token_hash) is None
    got = backend.refresh.get(winner.token_hash)
    assert got is not None and got.revoked_at == NOW + 1


def test_many_concurrent_uses_give_one_rotation_one_reuse_and_the_rest_revoked(
    backend: Stores,
) -> None:
    rec = record("fam-stampede")
    backend.refresh.create(rec)
    results = _race(backend, rec, 8)
    assert Counter(r.status for r, _ in results) == {"rotated": 1, "reused": 1, "revoked": 6}
    winner = next(nxt for r, nxt in results if r.status == "rotated")
    for r, _ in results:
        if r.status != "rotated":
            assert jtis(r) == {rec.access_jti, winner.access_jti}


# -- DPoP replay cache -------------------------------------------------------------------


def test_replay_cache_adds_each_key_once(backend: Stores) -> None:
    assert isinstance(backend.replay, ReplayCache)
    assert backend.replay.add("thumb:jti-1", expires_at=NOW + 60, now=NOW)
    assert not backend.replay.add("thumb:jti-1", expires_at=NOW + 60, now=NOW + 1)
    assert backend.replay.add("thumb:jti-2", expires_at=NOW + 60, now=NOW + 1)
    assert backend.replay.add("x" * 600, expires_at=NOW + 60, now=NOW)  # long keys are hashed
    assert not backend.replay.add("x" * 600, expires_at=NOW + 60, now=NOW)


def test_replay_cache_forgets_a_key_when_its_window_closes(backend: Stores) -> None:
    assert backend.replay.add("k", expires_at=NOW + 60, now=NOW)
    if backend.ttl_based:
        import hashlib

        digest = hashlib.sha256(b"k").hexdigest()
        assert 59_000 < backend.pttl(f"replay:{digest}") <= 60_000
    else:
        assert not backend.replay.add("k", expires_at=NOW + 120, now=NOW + 59)
        assert backend.replay.add("k", expires_at=NOW + 120, now=NOW + 60)
        assert not backend.replay.add("k", expires_at=NOW + 120, now=NOW + 61)
    # A key whose window is already closed never blocks a later proof.
    assert backend.replay.add("stale", expires_at=NOW, now=NOW)
    assert backend.replay.add("stale", expires_at=NOW + 60, now=NOW)


def test_concurrent_replays_of_one_proof_admit_exactly_one(backend: Stores) -> None:
    caches = [backend.replay if i % 2 == 0 else backend.other().replay for i in range(8)]
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def add(i: int) -> None:
        barrier.wait(timeout=30)
        ok = caches[i].add("thumb:same-jti", expires_at=NOW + 60, now=NOW)
        with lock:
            outcomes.append(ok)

    workers = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert sorted(outcomes) == [False] * 7 + [True]
