"""Client registries and authorization-code stores: one suite for memory and SQL
(SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from riskguard import db
from riskguard.auth import (
    AuthorizationCode,
    MemoryAuthorizationCodeStore,
    MemoryClientRegistry,
    OAuthClient,
    SqlAuthorizationCodeStore,
    SqlClientRegistry,
)
from riskguard.auth._codes import hash_code
from riskguard.errors import StorageError

T0 = 1_750_000_000.0


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    if request.param == "memory":
        yield MemoryClientRegistry(), MemoryAuthorizationCodeStore()
        return
    ns = request.getfixturevalue(f"{request.param}_ns")
    db.create_schema(ns.engine)
    yield SqlClientRegistry(ns.engine), SqlAuthorizationCodeStore(ns.engine)


def _client(client_id: str = "erp-1", **kw: Any) -> OAuthClient:
    options: dict[str, Any] = {
        "secret": "s3cret-value-1",
        "grant_types": ["client_credentials"],
        "scope": "orders:read",
        "tenant": "m-1",
        "secret_cost": 2**14,
    }
    options.update(kw)
    return OAuthClient.create(client_id, **options)


def _code(code: str = "code-1", **kw: Any) -> AuthorizationCode:
    fields: dict[str, Any] = dict(
        code_hash=hash_code(code),
        client_id="app",
        redirect_uri="https://a.test/cb",
        code_challenge="c" * 43,
        subject="u-1",
        scope="orders:read",
        issued_at=T0,
        expires_at=T0 + 60,
        tenant="m-1",
        roles=("customer",),
        claims={"acr": "1"},
    )
    fields.update(kw)
    return AuthorizationCode(**fields)


def test_client_round_trip(stores: tuple[Any, Any]) -> None:
    registry, _ = stores
    client = _client(roles=["merchant_system"], name="ERP")
    registry.add(client)
    got = registry.get("erp-1")
    assert got == client and got.check_secret("s3cret-value-1")
    assert registry.get("ERP-1") is None and registry.get("erp-1 ") is None  # exact ids
    with pytest.raises(StorageError):
        registry.add(client)
    registry.put(client.with_secret("new-secret-value", cost=2**14))
    rotated = registry.get("erp-1")
    assert rotated.check_secret("new-secret-value") and not rotated.check_secret("s3cret-value-1")
    assert registry.remove("erp-1") and not registry.remove("erp-1")
    assert registry.get("erp-1") is None


def test_code_is_single_use(stores: tuple[Any, Any]) -> None:
    _, codes = stores
    codes.create(_code())
    first = codes.consume(hash_code("code-1"), now=T0 + 1)
    assert first.status == "ok" and first.record.subject == "u-1"
    assert first.record.roles == ("customer",) and dict(first.record.claims) == {"acr": "1"}
    assert codes.attach(hash_code("code-1"), access_jti="j-1", access_exp=T0 + 300, family_id="f-1")
    again = codes.consume(hash_code("code-1"), now=T0 + 2)
    assert again.status == "reused"
    assert (again.record.access_jti, again.record.family_id) == ("j-1", "f-1")
    assert codes.consume(hash_code("nope"), now=T0).status == "unknown"
    with pytest.raises(StorageError):
        codes.create(_code())


def test_expired_code(stores: tuple[Any, Any]) -> None:
    _, codes = stores
    codes.create(_code())
    assert codes.consume(hash_code("code-1"), now=T0 + 60).status == "expired"


def test_reuse_between_consume_and_attach_is_reported(stores: tuple[Any, Any]) -> None:
    _, codes = stores
    codes.create(_code())
    assert codes.consume(hash_code("code-1"), now=T0).status == "ok"
    assert codes.consume(hash_code("code-1"), now=T0).status == "reused"
    assert not codes.attach(
        hash_code("code-1"), access_jti="j", access_exp=T0 + 300, family_id=None
    )


def test_concurrent_redemptions_one_wins(stores: tuple[Any, Any]) -> None:
    _, codes = stores
    codes.create(_code())
    results: list[str] = []

    def redeem() -> None:
        results.append(codes.consume(hash_code("code-1"), now=T0 + 1).status)

    threads = [threading.Thread(target=redeem) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["reused"] * 5


def test_prune_keeps_codes_for_reuse_detection(stores: tuple[Any, Any]) -> None:
    _, codes = stores
    codes.create(_code())
    assert codes.prune(now=T0 + 120) == 0  # expired, kept an hour for reuse detection
    assert codes.prune(now=T0 + 60 + 3600) == 1
    assert codes.consume(hash_code("code-1"), now=T0).status == "unknown"
