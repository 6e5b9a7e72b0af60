"""The request middleware: ASGI (Starlette / FastAPI) and Flask, on one core.

Every test runs a real :class:`AuditLog` on SQLite and a real :class:`FieldCrypto`; the
store counts its ``append`` calls, so "one batch" is what the database saw, not what the
middleware meant to do.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import flask
import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import JSONResponse

from riskguard import db
from riskguard.audit import AuditEvent, AuditLog, PendingEvent, SqlStore
from riskguard.audit._store import Head
from riskguard.auth import KeySet, TokenService, jwk_thumbprint
from riskguard.config import AuditSettings, KeysSettings, Settings
from riskguard.context import Principal, current_principal, current_request
from riskguard.crypto import FieldCrypto, Keyring, MemoryKeyProvider
from riskguard.errors import ConfigError, KeyManagementError, TokenError
from riskguard.guard import Guard
from riskguard.integrations import flask as rg_flask
from riskguard.integrations.asgi import RiskGuardMiddleware, Scope, bearer_principal
from riskguard.types import ResourceRef
from tests.auth._tokens import dpop_proof, make_key
from tests.conftest import SqlNamespace

with warnings.catch_warnings():
    # Starlette announces its move to the httpx2 package on import; httpx is what we have.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
PHONES = {"c-1": "+8613800138001", "c-2": "+8613800138002", "c-3": "+8613800138003"}
ADDRESSES = {"c-1": "1 Nanjing Rd", "c-2": "2 Huaihai Rd", "c-3": "3 Fuxing Rd"}
BOTH_FIELDS_OF_C1_C2 = {
    "fields": {
        "customer.address": {"count": 2, "records": ["c-1", "c-2"]},
        "customer.phone": {"count": 2, "records": ["c-1", "c-2"]},
    }
}


class SpyStore(SqlStore):
    """A real SQL store that remembers each appended batch."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.batches: list[list[AuditEvent]] = []

    def append(self, pending: Sequence[PendingEvent]) -> tuple[list[AuditEvent], Head]:
        events, head = super().append(pending)
        self.batches.append(events)
        return events, head


@dataclass
class Env:
    """An audit log and field crypto on one SQLite file, with three encrypted customers."""

    store: SpyStore
    audit: AuditLog
    crypto: FieldCrypto
    records: dict[str, dict[str, str]] = field(default_factory=dict)

    def read(self, cid: str) -> dict[str, str]:
        """Decrypt a customer's phone and address (what a handler's ORM load does)."""
        return {
            col: self.crypto.field("customer", col, per_row=True).decrypt_text(token, row=cid)
            for col, token in self.records[cid].items()
        }

    def view(self, *ids: str) -> None:
        """The handler's work: read each customer and audit the view."""
        for cid in ids:
            self.read(cid)
            self.audit.record("customer.view", "success", resource=ResourceRef("customer", cid))

    def actions(self) -> list[list[str]]:
        return [[e.action for e in batch] for batch in self.store.batches]


def _seed(crypto: FieldCrypto) -> dict[str, dict[str, str]]:
    phone = crypto.field("customer", "phone", per_row=True)
    address = crypto.field("customer", "address", per_row=True)
    return {
        cid: {
            "phone": phone.encrypt_text(PHONES[cid], row=cid),
            "address": address.encrypt_text(ADDRESSES[cid], row=cid),
        }
        for cid in PHONES
    }


@pytest.fixture
def env(sqlite_ns: SqlNamespace) -> Env:
    db.create_schema(sqlite_ns.engine)
    store = SpyStore(sqlite_ns.engine)
    audit = AuditLog(store, keys=None)
    crypto = FieldCrypto(Keyring(sqlite_ns.engine, MemoryKeyProvider()), audit=audit)
    e = Env(store, audit, crypto, _seed(crypto))
    assert e.store.batches == []  # seeding records nothing: the tests count from zero
    return e


@pytest.fixture
def service() -> TokenService:
    return TokenService(KeySet.generate("EdDSA"), issuer=ISSUER, audience=AUDIENCE)


def _token(service: TokenService, **kwargs: Any) -> tuple[str, str]:
    grant = service.issue(
        subject="u-7",
        client_id="rider-app",
        scope="orders:read orders:write",
        tenant="m-42",
        roles=["support", "viewer"],
        **kwargs,
    )
    return grant.access.token, grant.access.jti


def _who() -> dict[str, Any]:
    p, r = current_principal(), current_request()
    return {
        "subject": p.subject if p else None,
        "domain": p.domain if p else None,
        "roles": list(p.roles) if p else None,
        "scopes": list(p.scopes) if p else None,
        "token_id": p.token_id if p else None,
        "request_id": r.request_id if r else None,
        "client_ip": r.client_ip if r else None,
        "user_agent": r.user_agent if r else None,
    }


def _assert_no_plaintext(events: Sequence[AuditEvent]) -> None:
    text = " ".join(e.details_json for e in events)
    for value in (*PHONES.values(), *ADDRESSES.values()):
        assert value not in text


# -- FastAPI / Starlette ---------------------------------------------------------------------


def fastapi_app(env: Env, **middleware: Any) -> tuple[FastAPI, dict[str, Any]]:
    """An app whose routes read customers; ``seen`` collects what the routes observed."""
    seen: dict[str, Any] = {"calls": 0}
    app = FastAPI()

    @app.get("/customers")
    async def customers() -> dict[str, Any]:
        seen["calls"] += 1
        env.view("c-1", "c-2")
        return _who()

    @app.get("/sync-customers")
    def sync_customers() -> dict[str, Any]:
        seen["calls"] += 1
        seen["handler_thread"] = threading.get_ident()
        env.view("c-1", "c-2")
        return _who()

    @app.get("/boom")
    async def boom() -> None:
        env.audit.record("order.refund", "failure", resource=ResourceRef("order", "o-9"))
        env.read("c-3")
        raise RuntimeError("the handler failed")

    app.add_middleware(RiskGuardMiddleware, audit=env.audit, crypto=env.crypto, **middleware)
    return app, seen


def test_fastapi_one_pii_read_in_the_request_batch(env: Env, service: TokenService) -> None:
    token, jti = _token(service)
    app, _ = fastapi_app(env, principal=bearer_principal(service.verifier()))
    with TestClient(app) as client:
        r = client.get(
            "/customers",
            headers={
                "Authorization": f"Bearer {token}",
                "X-Request-ID": "req-42",
                "User-Agent": "rider-app/7.1",
            },
        )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42"
    assert r.json() == {
        "subject": "u-7",
        "domain": "m-42",
        "roles": ["support", "viewer"],
        "scopes": ["orders:read", "orders:write"],
        "token_id": jti,
        "request_id": "req-42",
        "client_ip": "testclient",
        "user_agent": "rider-app/7.1",
    }
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]]
    batch = env.store.batches[0]
    assert [e.resource for e in batch] == [
        {"type": "customer", "id": "c-1", "tenant": None},
        {"type": "customer", "id": "c-2", "tenant": None},
        {"type": "pii", "id": None, "tenant": None},
    ]
    assert batch[2].details == BOTH_FIELDS_OF_C1_C2
    actor = {
        "id": "u-7",
        "type": "user",
        "tenant": "m-42",
        "roles": ["support", "viewer"],
        "ip": "testclient",
    }
    assert all(e.actor == actor for e in batch)
    assert {e.request_id for e in batch} == {"req-42"}
    assert [e.seq for e in batch] == [1, 2, 3]
    _assert_no_plaintext(batch)


def test_fastapi_sync_endpoint_in_the_threadpool_is_counted(env: Env) -> None:
    loop_thread: list[int] = []

    async def principal(scope: Scope) -> Principal:  # an async resolver, on the loop
        loop_thread.append(threading.get_ident())
        return Principal("staff-3", type="staff", roles=("support",))

    app, seen = fastapi_app(env, principal=principal)
    with TestClient(app) as client:
        r = client.get("/sync-customers")
    assert r.status_code == 200
    assert seen["handler_thread"] != loop_thread[0]  # the endpoint did run in a worker
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0  # a fresh uuid4 hex
    assert r.json()["subject"] == "staff-3" and r.json()["request_id"] == rid
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]]
    batch = env.store.batches[0]
    assert batch[2].details == BOTH_FIELDS_OF_C1_C2
    assert {e.request_id for e in batch} == {rid}
    assert {e.actor["id"] for e in batch if e.actor} == {"staff-3"}
    assert all(e.actor is not None and e.actor["type"] == "staff" for e in batch)


def test_fastapi_a_handler_that_raises_still_lands_its_events(env: Env) -> None:
    app, _ = fastapi_app(env, principal=lambda scope: Principal("u-8"))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "req-boom"})
    assert r.status_code == 500
    assert env.actions() == [["order.refund", "pii.read"]]
    batch = env.store.batches[0]
    assert batch[0].outcome == "failure"
    assert batch[1].details == {
        "fields": {
            "customer.phone": {"count": 1, "records": ["c-3"]},
            "customer.address": {"count": 1, "records": ["c-3"]},
        }
    }
    assert {e.request_id for e in batch} == {"req-boom"}
    assert {e.actor["id"] for e in batch if e.actor} == {"u-8"}
    _assert_no_plaintext(batch)


def test_fastapi_the_exception_propagates_after_the_batch_landed(env: Env) -> None:
    app, _ = fastapi_app(env)
    with TestClient(app) as client, pytest.raises(RuntimeError, match="the handler failed"):
        client.get("/boom")
    assert env.actions() == [["order.refund", "pii.read"]]
    assert all(e.actor is None for e in env.store.batches[0])


@pytest.mark.parametrize(
    "sent",
    [None, "", "has space", "x" * 129, "semi;colon", "ünïcode"],
    ids=["missing", "empty", "space", "too-long", "semicolon", "non-ascii"],
)
def test_a_missing_or_unsafe_request_id_is_replaced(env: Env, sent: str | None) -> None:
    app, _ = fastapi_app(env)
    headers = {} if sent is None else {"X-Request-ID": sent.encode("utf-8")}
    with TestClient(app) as client:
        r = client.get("/customers", headers=headers)
    rid = r.headers["x-request-id"]
    assert rid != sent and len(rid) == 32 and int(rid, 16) >= 0
    assert r.json()["request_id"] == rid
    assert {e.request_id for e in env.store.batches[0]} == {rid}


def test_the_request_id_header_name_is_configurable(env: Env) -> None:
    app, _ = fastapi_app(env, request_id_header="X-Correlation-ID")
    with TestClient(app) as client:
        r = client.get("/customers", headers={"X-Correlation-ID": "corr-1", "X-Request-ID": "no"})
    assert r.headers["x-correlation-id"] == "corr-1" and "x-request-id" not in r.headers
    assert {e.request_id for e in env.store.batches[0]} == {"corr-1"}


@pytest.mark.parametrize(
    ("trust", "forwarded", "expected"),
    [
        (False, "203.0.113.9, 10.0.0.1", "testclient"),
        (True, "203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (True, "2001:db8::7", "2001:db8::7"),
        (True, "unknown, 10.0.0.1", "testclient"),
    ],
    ids=["off-ignores-header", "on-first-hop", "on-ipv6", "on-not-an-address"],
)
def test_trust_forwarded(env: Env, trust: bool, forwarded: str, expected: str) -> None:
    app, _ = fastapi_app(env, principal=lambda scope: Principal("u-1"), trust_forwarded=trust)
    with TestClient(app) as client:
        r = client.get("/customers", headers={"X-Forwarded-For": forwarded})
    assert r.json()["client_ip"] == expected
    assert {e.actor["ip"] for e in env.store.batches[0] if e.actor} == {expected}


@pytest.fixture
def other_service() -> TokenService:
    return TokenService(KeySet.generate("EdDSA"), issuer=ISSUER, audience=AUDIENCE)


def _bad_tokens(service: TokenService, other: TokenService) -> list[tuple[str, str]]:
    expired, _ = _token(service, now=time.time() - 7200)
    foreign, _ = _token(other)
    return [
        ("expired", expired),
        ("unknown_kid", foreign),
        ("malformed", "secret-looking-garbage-0123456789"),
    ]


def test_fastapi_a_bad_bearer_token_is_a_401_without_the_token(
    env: Env, service: TokenService, other_service: TokenService
) -> None:
    app, seen = fastapi_app(env, principal=bearer_principal(service.verifier()))
    with TestClient(app) as client:
        for code, token in _bad_tokens(service, other_service):
            r = client.get(
                "/customers", headers={"Authorization": f"Bearer {token}", "X-Request-ID": code}
            )
            assert r.status_code == 401, code
            assert r.json() == {"error": code}
            assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert r.headers["x-request-id"] == code
            for part in (token, *token.split(".")):
                assert part not in r.text
                assert all(part not in v for v in r.headers.values())
    assert seen["calls"] == 0  # the application never ran
    assert env.store.batches == []  # and nothing was decrypted or recorded


def test_fastapi_no_bearer_credentials_is_anonymous(env: Env, service: TokenService) -> None:
    app, _ = fastapi_app(env, principal=bearer_principal(service.verifier()))
    with TestClient(app) as client:
        plain = client.get("/customers")
        basic = client.get("/customers", headers={"Authorization": "Basic dTpw"})
    assert plain.status_code == basic.status_code == 200
    assert plain.json()["subject"] is None and basic.json()["subject"] is None
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]] * 2
    assert all(e.actor is None for batch in env.store.batches for e in batch)


def test_on_error_answers_inside_the_request_batch(env: Env, service: TokenService) -> None:
    def on_error(scope: Scope, exc: TokenError) -> JSONResponse:
        env.audit.record("auth.reject", "deny", reason=exc.code)
        return JSONResponse({"denied": exc.code}, status_code=403)

    app, _ = fastapi_app(env, principal=bearer_principal(service.verifier()), on_error=on_error)
    with TestClient(app) as client:
        r = client.get("/customers", headers={"Authorization": "Bearer x", "X-Request-ID": "r-9"})
    assert (r.status_code, r.json(), r.headers["x-request-id"]) == (
        403,
        {"denied": "malformed"},
        "r-9",
    )
    assert env.actions() == [["auth.reject"]]
    assert env.store.batches[0][0].request_id == "r-9"
    assert env.store.batches[0][0].reason == "malformed"


def test_a_token_without_a_usable_principal_is_refused(env: Env, service: TokenService) -> None:
    verifier = service.verifier()
    token, _ = _token(service)
    app, seen = fastapi_app(
        env, principal=bearer_principal(verifier, roles_claim="scope", domain_claim="iat")
    )
    with TestClient(app) as client:
        r = client.get("/customers", headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()) == (401, {"error": "bad_claim_type"})
    assert seen["calls"] == 0


def test_a_dpop_bound_token_needs_its_proof_for_this_url(env: Env, service: TokenService) -> None:
    holder = make_key("ES256")
    token, _ = _token(service, jkt=jwk_thumbprint(holder.public_jwk))
    app, seen = fastapi_app(env, principal=bearer_principal(service.verifier()))
    auth = {"Authorization": f"DPoP {token}"}

    def proof(url: str) -> str:
        return dpop_proof(holder, token, method="GET", url=url, now=time.time())

    with TestClient(app) as client:
        ok = client.get(
            "/customers", headers={**auth, "DPoP": proof("http://testserver/customers")}
        )
        missing = client.get("/customers", headers=auth)
        elsewhere = client.get("/customers", headers={**auth, "DPoP": proof("http://testserver/x")})
    assert (ok.status_code, ok.json()["subject"]) == (200, "u-7")
    assert (missing.status_code, missing.json()) == (401, {"error": "dpop_required"})
    assert missing.headers["www-authenticate"].startswith('DPoP error="invalid_token"')
    assert (elsewhere.status_code, elsewhere.json()) == (401, {"error": "bad_dpop"})
    assert seen["calls"] == 1
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]]


def test_websocket_and_lifespan_pass_through(env: Env) -> None:
    started: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append(current_request())
        yield

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"request": current_request() is not None})
        env.audit.record("ws.message", "success")  # not batched: appended at once
        await websocket.close()

    app.add_middleware(RiskGuardMiddleware, audit=env.audit, crypto=env.crypto)
    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        assert socket.receive_json() == {"request": False}
    assert started == [None]
    assert env.actions() == [["ws.message"]]


def test_non_http_scopes_reach_the_app_untouched(env: Env) -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        return None

    mw = RiskGuardMiddleware(inner, audit=env.audit, crypto=env.crypto)
    scopes: list[dict[str, Any]] = [
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        {"type": "websocket", "path": "/ws", "headers": [(b"x-request-id", b"r-1")]},
    ]
    for scope in scopes:
        asyncio.run(mw(scope, receive, send))
    assert [(c[0], c[1], c[2]) for c in calls] == [(s, receive, send) for s in scopes]
    assert all(c[0] is s for c, s in zip(calls, scopes, strict=True))
    assert scopes[1] == {"type": "websocket", "path": "/ws", "headers": [(b"x-request-id", b"r-1")]}


def test_concurrent_requests_keep_separate_batches(env: Env) -> None:
    arrived = 0
    both = asyncio.Event()
    app = FastAPI()

    @app.get("/customer/{cid}")
    async def customer(cid: str) -> dict[str, Any]:
        nonlocal arrived
        env.read(cid)
        arrived += 1
        if arrived == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # the other request is now mid-flight too
        env.view(cid)
        return _who()

    wrapped = RiskGuardMiddleware(
        app,
        audit=env.audit,
        crypto=env.crypto,
        principal=lambda scope: Principal(f"u-{scope['path'][-1]}"),
    )

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return list(
                await asyncio.gather(client.get("/customer/c-1"), client.get("/customer/c-2"))
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200]
    assert env.actions() == [["customer.view", "pii.read"]] * 2
    by_record = {b[0].resource["id"]: b for b in env.store.batches if b[0].resource}
    for cid, r in zip(("c-1", "c-2"), responses, strict=True):
        batch = by_record[cid]
        assert batch[1].details == {
            "fields": {
                "customer.address": {"count": 2, "records": [cid]},
                "customer.phone": {"count": 2, "records": [cid]},
            }
        }
        assert {e.request_id for e in batch} == {r.headers["x-request-id"]}
        assert {e.actor["id"] for e in batch if e.actor} == {f"u-{cid[-1]}"}


# -- construction ------------------------------------------------------------------------


def _guard(tmp_path: Path, ns: SqlNamespace, provider: Literal["file", "memory"]) -> Guard:
    settings = Settings(
        base_dir=tmp_path,
        keys=KeysSettings(provider=provider),
        audit=AuditSettings(checkpoints=False),
    )
    return Guard(settings, engine=ns.engine)


def test_a_guard_supplies_audit_and_crypto(tmp_path: Path, sqlite_ns: SqlNamespace) -> None:
    guard = _guard(tmp_path, sqlite_ns, "memory")
    guard.create_schema()
    seeded = Env(SpyStore(sqlite_ns.engine), guard.audit, guard.crypto, _seed(guard.crypto))
    before = guard.audit.head().seq
    app = FastAPI()

    @app.get("/c")
    async def c() -> None:
        seeded.view("c-2")

    app.add_middleware(RiskGuardMiddleware, guard=guard)
    with TestClient(app) as client:
        rid = client.get("/c").headers["x-request-id"]
    events = [e for e in guard.audit.tail(10) if e.seq > before]
    assert [e.action for e in events] == ["customer.view", "pii.read"]
    assert events[1].details == {
        "fields": {
            "customer.address": {"count": 1, "records": ["c-2"]},
            "customer.phone": {"count": 1, "records": ["c-2"]},
        }
    }
    assert {e.request_id for e in events} == {rid}


def test_a_guard_without_usable_keys_is_a_config_error_at_construction(
    tmp_path: Path, sqlite_ns: SqlNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RISKGUARD_KEYRING_PASSPHRASE", raising=False)
    guard = _guard(tmp_path, sqlite_ns, "file")

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    with pytest.raises(ConfigError) as asgi_err:
        RiskGuardMiddleware(app, guard=guard)
    with pytest.raises(ConfigError) as flask_err:
        rg_flask.init_app(flask.Flask(__name__), guard=guard)
    for err in (asgi_err.value, flask_err.value):
        assert err.key == "keys.provider"
        assert isinstance(err.__cause__, KeyManagementError)
        assert "RISKGUARD_KEYRING_PASSPHRASE" in str(err) and "audit=guard.audit" in (
            err.hint or ""
        )
    # Without crypto, the same guard serves audit batching alone.
    RiskGuardMiddleware(app, audit=guard.audit)


def test_crypto_that_records_nowhere_is_refused(env: Env, sqlite_ns: SqlNamespace) -> None:
    silent = FieldCrypto(Keyring(sqlite_ns.engine, MemoryKeyProvider()))
    assert silent.audit is None
    with pytest.raises(ConfigError, match=r"pii\.read events would be lost"):
        RiskGuardMiddleware(FastAPI(), audit=env.audit, crypto=silent)
    with pytest.raises(ConfigError, match=r"pii\.read events would be lost"):
        rg_flask.init_app(flask.Flask(__name__), audit=env.audit, crypto=silent)


# -- Flask -------------------------------------------------------------------------------


def flask_app(env: Env, **options: Any) -> tuple[flask.Flask, dict[str, Any]]:
    seen: dict[str, Any] = {"calls": 0}
    app = flask.Flask(__name__)

    @app.before_request
    def app_hook() -> None:  # registered first, runs after riskguard's
        seen["hook_request"] = current_request()

    @app.get("/customers")
    def customers() -> dict[str, Any]:
        seen["calls"] += 1
        env.view("c-1", "c-2")
        return _who()

    @app.get("/boom")
    def boom() -> str:
        env.audit.record("order.refund", "failure", resource=ResourceRef("order", "o-9"))
        env.read("c-3")
        raise RuntimeError("the view failed")

    rg_flask.init_app(app, audit=env.audit, crypto=env.crypto, **options)
    return app, seen


def test_flask_one_pii_read_in_the_request_batch(env: Env, service: TokenService) -> None:
    token, jti = _token(service)
    app, seen = flask_app(env, principal=rg_flask.bearer_principal(service.verifier()))
    r = app.test_client().get(
        "/customers",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-ID": "req-f1",
            "User-Agent": "merchant-pos/2",
        },
    )
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == "req-f1"
    assert r.json == {
        "subject": "u-7",
        "domain": "m-42",
        "roles": ["support", "viewer"],
        "scopes": ["orders:read", "orders:write"],
        "token_id": jti,
        "request_id": "req-f1",
        "client_ip": "127.0.0.1",
        "user_agent": "merchant-pos/2",
    }
    assert seen["hook_request"] is not None and seen["hook_request"].request_id == "req-f1"
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]]
    batch = env.store.batches[0]
    assert batch[2].details == BOTH_FIELDS_OF_C1_C2
    assert {e.request_id for e in batch} == {"req-f1"}
    assert all(
        e.actor is not None
        and e.actor["id"] == "u-7"
        and e.actor["tenant"] == "m-42"
        and e.actor["ip"] == "127.0.0.1"
        for e in batch
    )
    _assert_no_plaintext(batch)
    assert current_request() is None and current_principal() is None  # reset after teardown


def test_flask_a_view_that_raises_still_lands_its_events(env: Env) -> None:
    app, _ = flask_app(env, principal=lambda request: Principal("u-8"))
    r = app.test_client().get("/boom", headers={"X-Request-ID": "req-f-boom"})
    assert r.status_code == 500
    assert r.headers["X-Request-ID"] == "req-f-boom"
    assert env.actions() == [["order.refund", "pii.read"]]
    batch = env.store.batches[0]
    assert batch[1].details["fields"]["customer.phone"] == {"count": 1, "records": ["c-3"]}
    assert {e.request_id for e in batch} == {"req-f-boom"}
    assert {e.actor["id"] for e in batch if e.actor} == {"u-8"}


def test_flask_a_propagated_exception_still_lands_its_events(env: Env) -> None:
    app, _ = flask_app(env)
    app.testing = True  # the test client re-raises the view's exception
    with pytest.raises(RuntimeError, match="the view failed"):
        app.test_client().get("/boom")
    assert env.actions() == [["order.refund", "pii.read"]]
    assert current_request() is None


def test_flask_a_bad_bearer_token_is_a_401_without_the_token(
    env: Env, service: TokenService, other_service: TokenService
) -> None:
    app, seen = flask_app(env, principal=rg_flask.bearer_principal(service.verifier()))
    client = app.test_client()
    for code, token in _bad_tokens(service, other_service):
        r = client.get(
            "/customers", headers={"Authorization": f"Bearer {token}", "X-Request-ID": code}
        )
        assert r.status_code == 401, code
        assert r.json == {"error": code}
        assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert r.headers["X-Request-ID"] == code
        body = r.get_data(as_text=True)
        for part in (token, *token.split(".")):
            assert part not in body
            assert all(part not in v for _, v in r.headers.items())
    assert seen["calls"] == 0
    assert env.store.batches == []


def test_flask_a_dpop_bound_token_with_its_proof(env: Env, service: TokenService) -> None:
    holder = make_key("EdDSA")
    token, _ = _token(service, jkt=jwk_thumbprint(holder.public_jwk))
    app, _ = flask_app(env, principal=rg_flask.bearer_principal(service.verifier()))
    proof = dpop_proof(
        holder, token, method="GET", url="http://localhost/customers", now=time.time()
    )
    client = app.test_client()
    ok = client.get("/customers", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    replayed = client.get("/customers", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert ok.status_code == 200 and ok.json is not None and ok.json["subject"] == "u-7"
    assert (replayed.status_code, replayed.json) == (401, {"error": "bad_dpop"})
    assert env.actions() == [["customer.view", "customer.view", "pii.read"]]


@pytest.mark.parametrize(
    ("trust", "expected"), [(False, "192.0.2.10"), (True, "203.0.113.9")], ids=["off", "on"]
)
def test_flask_trust_forwarded(env: Env, trust: bool, expected: str) -> None:
    app, _ = flask_app(env, principal=lambda request: Principal("u-1"), trust_forwarded=trust)
    r = app.test_client().get(
        "/customers",
        headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"},
        environ_base={"REMOTE_ADDR": "192.0.2.10"},
    )
    assert r.json is not None and r.json["client_ip"] == expected
    assert {e.actor["ip"] for e in env.store.batches[0] if e.actor} == {expected}


@pytest.fixture(autouse=True)
def _no_leaked_context() -> Iterator[None]:
    yield
    assert current_request() is None and current_principal() is None
