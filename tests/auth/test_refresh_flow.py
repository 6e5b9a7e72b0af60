"""The refresh-token grant end to end: TokenService + TokenVerifier + stores + audit log.

Runs on the memory stores, on SQLite and on Redis. A real :class:`AuditLog` records the
events; every test that touches tokens also checks that no token (nor its hash) reached
the log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from riskguard import db
from riskguard.audit import AuditEvent, AuditLog, MemoryStore, SearchFilter
from riskguard.auth import (
    DenyListStore,
    GrantRejected,
    KeySet,
    MemoryDenyList,
    MemoryRefreshTokenStore,
    RefreshTokenStore,
    SqlDenyList,
    SqlRefreshTokenStore,
    TokenGrant,
    TokenRejected,
    TokenService,
    TokenVerifier,
    hash_refresh_token,
)
from riskguard.context import Principal, request_context
from riskguard.errors import StorageError
from tests.auth._tokens import TestKey, dpop_proof, thumbprint

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
NOW = 1_750_000_000
TTL = 300
LEEWAY = 30
REFRESH_TTL = 7 * 86_400
URL = "https://api.o2o.test/orders"


@dataclass
class Flow:
    service: TokenService
    verifier: TokenVerifier
    log: AuditLog
    deny: DenyListStore
    store: RefreshTokenStore
    secrets: list[str]  # every token handed out, to prove none reaches the audit log
    redis: Any = None  # (client, prefix) on Redis

    def assert_denied_until(self, jti: str, until: float, revoked_at: float) -> None:
        """The deny-list keeps ``jti`` exactly until ``until`` (a TTL on Redis)."""
        if self.redis is not None:
            client, prefix = self.redis
            ttl = client.pttl(f"{prefix}deny:{jti}")
            assert (until - revoked_at) * 1000 - 2000 < ttl <= (until - revoked_at) * 1000
            return
        prune = self.deny.prune  # type: ignore[attr-defined]
        prune(now=until - 1)
        assert self.deny.is_revoked(jti)
        prune(now=until)
        assert not self.deny.is_revoked(jti)

    def issue(self, **kwargs: Any) -> TokenGrant:
        kwargs.setdefault("subject", "u-1001")
        kwargs.setdefault("client_id", "rider-app")
        kwargs.setdefault("scope", "orders:read orders:write")
        kwargs.setdefault("tenant", "merchant-42")
        kwargs.setdefault("now", NOW)
        return self.keep(self.service.issue(refresh=True, **kwargs))

    def refresh(self, token: str | None, **kwargs: Any) -> TokenGrant:
        assert token is not None
        kwargs.setdefault("client_id", "rider-app")
        return self.keep(self.service.refresh(token, **kwargs))

    def keep(self, grant: TokenGrant) -> TokenGrant:
        self.secrets.append(grant.access.token)
        if grant.refresh_token:
            self.secrets += [grant.refresh_token, hash_refresh_token(grant.refresh_token)]
        return grant

    def verify(self, grant: TokenGrant, now: float = NOW + 60) -> dict[str, Any]:
        return self.verifier.verify(grant.access.token, now=now)

    def rejected(self, grant: TokenGrant, now: float = NOW + 60) -> str:
        with pytest.raises(TokenRejected) as exc:
            self.verify(grant, now)
        return exc.value.code

    def events(self, action: str) -> list[AuditEvent]:
        return self.log.search(SearchFilter(action=action), newest_first=False)

    def assert_no_secrets_logged(self) -> None:
        for ev in self.log.tail(1000):
            text = ev.details_json + (ev.reason or "")
            for secret in self.secrets:
                assert secret not in text


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def flow(request: pytest.FixtureRequest) -> Iterator[Flow]:
    deny: Any
    store: Any
    if request.param == "memory":
        deny, store = MemoryDenyList(), MemoryRefreshTokenStore()
    elif request.param == "sqlite":
        ns = request.getfixturevalue("sqlite_ns")
        db.create_schema(ns.engine)
        deny, store = SqlDenyList(ns.engine), SqlRefreshTokenStore(ns.engine)
    else:
        from riskguard.auth import RedisDenyList, RedisRefreshTokenStore

        ns = request.getfixturevalue("redis_ns")
        deny = RedisDenyList(ns.client, prefix=ns.prefix)
        store = RedisRefreshTokenStore(ns.client, prefix=ns.prefix)
    log = AuditLog(MemoryStore("test/auth"))
    service = TokenService(
        KeySet.generate("EdDSA"), issuer=ISSUER, audience=AUDIENCE, access_token_ttl=TTL,
        refresh_token_ttl=REFRESH_TTL, leeway=LEEWAY, refresh_store=store, deny_list=deny,
        audit=log,
    )  # fmt: skip
    # The resource server: built from the published JWKS, sharing the deny-list.
    verifier = TokenVerifier(service.jwks(now=NOW), issuer=ISSUER, audience=AUDIENCE,
                             leeway=LEEWAY, max_lifetime=TTL, deny_list=deny)  # fmt: skip
    f = Flow(service, verifier, log, deny, store, [])
    if request.param == "redis":
        f.redis = (ns.client, ns.prefix)
    yield f
    f.assert_no_secrets_logged()


def expect(flow: Flow, code: str, token: str | None, **kwargs: Any) -> GrantRejected:
    with pytest.raises(GrantRejected) as exc:
        flow.refresh(token, **kwargs)
    assert exc.value.code == code
    return exc.value


# -- the happy path ---------------------------------------------------------------------


def test_each_refresh_rotates_the_token_and_issues_a_fresh_access_token(flow: Flow) -> None:
    g1 = flow.issue()
    g2 = flow.refresh(g1.refresh_token, now=NOW + 100)
    g3 = flow.refresh(g2.refresh_token, now=NOW + 200)
    assert g1.family_id == g2.family_id == g3.family_id
    assert len({g1.refresh_token, g2.refresh_token, g3.refresh_token}) == 3
    claims = flow.verify(g3, now=NOW + 201)
    assert claims["sub"] == "u-1001" and claims["tenant"] == "merchant-42"
    assert claims["scope"] == "orders:read orders:write" and claims["iat"] == NOW + 200
    # Rotation alone revokes nothing: earlier access tokens live out their short life.
    assert flow.verify(g1)["jti"] == g1.access.jti

    [issued] = flow.events("auth.token_issue")
    assert issued.details == {"jti": g1.access.jti, "client_id": "rider-app",
                              "family": g1.family_id, "generation": 1}  # fmt: skip
    refreshes = flow.events("auth.token_refresh")
    assert [(e.outcome, e.details["generation"], e.details["jti"]) for e in refreshes] == [
        ("success", 2, g2.access.jti),
        ("success", 3, g3.access.jti),
    ]
    assert refreshes[0].actor is not None and refreshes[0].actor["id"] == "u-1001"
    assert refreshes[0].resource == {"type": "refresh_family", "id": g1.family_id,
                                     "tenant": "merchant-42"}  # fmt: skip


# -- reuse detection ------------------------------------------------------------------------


def test_a_reused_refresh_token_kills_the_whole_family(flow: Flow) -> None:
    g1 = flow.issue()
    g2 = flow.refresh(g1.refresh_token, now=NOW + 10)
    g3 = flow.refresh(g2.refresh_token, now=NOW + 20)
    other = flow.issue(subject="u-2002")  # another grant: must survive
    assert flow.verify(g3)["jti"] == g3.access.jti

    err = expect(flow, "reused", g1.refresh_token, now=NOW + 30)
    assert (err.oauth_error, err.status_code) == ("invalid_grant", 400)
    for grant in (g1, g2, g3):
        assert flow.rejected(grant, now=NOW + 31) == "revoked"
    expect(flow, "revoked", g3.refresh_token, now=NOW + 40)  # the live end is dead too
    expect(flow, "revoked", g2.refresh_token, now=NOW + 41)
    assert flow.verify(other, now=NOW + 42)["sub"] == "u-2002"
    assert flow.refresh(other.refresh_token, client_id="rider-app", now=NOW + 43)

    [reuse] = flow.events("auth.refresh_reuse")
    assert reuse.outcome == "failure"
    assert reuse.details["family"] == g1.family_id and reuse.details["generation"] == 1
    assert reuse.details["revoked_access_tokens"] == 3
    assert set(reuse.details["jtis"]) == {g1.access.jti, g2.access.jti, g3.access.jti}
    assert set(reuse.details) == {"client_id", "family", "generation",
                                  "revoked_access_tokens", "jtis"}  # fmt: skip
    failures = [e for e in flow.events("auth.token_refresh") if e.outcome == "failure"]
    assert [e.reason for e in failures] == ["revoked", "revoked"]
    # Each stays denied until no verifier would accept it anyway: exp plus the leeway.
    flow.assert_denied_until(g3.access.jti, g3.access.expires_at + LEEWAY, revoked_at=NOW + 30)


def test_when_the_thief_refreshes_first_the_victims_retry_revokes_the_thief(flow: Flow) -> None:
    victim = flow.issue()
    stolen = victim.refresh_token
    thief = flow.refresh(stolen, now=NOW + 5)  # the attacker wins the race
    assert flow.verify(thief)["sub"] == "u-1001"
    expect(flow, "reused", stolen, now=NOW + 6)  # the legitimate client comes back
    assert flow.rejected(thief) == "revoked"
    assert flow.rejected(victim) == "revoked"
    expect(flow, "revoked", thief.refresh_token, now=NOW + 7)


def test_concurrent_refreshes_of_one_token_yield_one_grant_and_revoke_it(flow: Flow) -> None:
    g1 = flow.issue()
    barrier = threading.Barrier(2)
    outcomes: list[TokenGrant | GrantRejected] = []
    lock = threading.Lock()

    def use() -> None:
        barrier.wait(timeout=30)
        try:
            got: TokenGrant | GrantRejected = flow.refresh(g1.refresh_token, now=NOW + 1)
        except GrantRejected as exc:
            got = exc
        with lock:
            outcomes.append(got)

    workers = [threading.Thread(target=use) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    grants = [o for o in outcomes if isinstance(o, TokenGrant)]
    errors = [o for o in outcomes if isinstance(o, GrantRejected)]
    assert len(grants) == 1 and [e.code for e in errors] == ["reused"]
    assert flow.rejected(grants[0], now=NOW + 2) == "revoked"
    assert flow.rejected(g1, now=NOW + 2) == "revoked"


def test_a_failed_deny_list_write_is_reported_and_healed_on_the_next_presentation(
    flow: Flow,
) -> None:
    g1 = flow.issue()
    g2 = flow.refresh(g1.refresh_token, now=NOW + 10)

    class Flaky:
        def __init__(self, inner: DenyListStore) -> None:
            self.inner, self.failures = inner, 1

        def is_revoked(self, jti: str) -> bool:
            return self.inner.is_revoked(jti)

        def revoke(self, jti: str, *, expires_at: float | None, now: float | None = None) -> None:
            if self.failures:
                self.failures -= 1
                raise StorageError("deny-list unreachable", engine="test")
            self.inner.revoke(jti, expires_at=expires_at, now=now)

    # The same authorisation server, its deny-list writes failing once.
    flaky = TokenService(
        flow.service.keys, issuer=ISSUER, audience=AUDIENCE, access_token_ttl=TTL,
        refresh_token_ttl=REFRESH_TTL, leeway=LEEWAY, refresh_store=flow.store,
        deny_list=Flaky(flow.deny), audit=flow.log,
    )  # fmt: skip
    with pytest.raises(StorageError):
        flaky.refresh(g1.refresh_token or "", client_id="rider-app", now=NOW + 20)
    [reuse] = flow.events("auth.refresh_reuse")
    assert reuse.details["deny_list"] == "failed" and reuse.details["revoked_access_tokens"] == 0
    assert flow.verify(g2)["jti"] == g2.access.jti  # not yet on the deny-list...
    expect(flow, "revoked", g2.refresh_token, now=NOW + 30)  # ...any later presentation
    assert flow.rejected(g2) == "revoked"  # puts the family's tokens there
    assert flow.rejected(g1) == "revoked"


# -- refused grants that consume nothing ----------------------------------------------------


@pytest.mark.parametrize("token", ["", "x" * 600, "never-issued-token", None])
def test_unknown_or_malformed_tokens_are_invalid_grant(flow: Flow, token: Any) -> None:
    with pytest.raises(GrantRejected) as exc:
        flow.service.refresh(token, client_id="rider-app", now=NOW)
    assert (exc.value.code, exc.value.oauth_error) == ("invalid_refresh_token", "invalid_grant")
    [event] = flow.events("auth.token_refresh")
    assert (event.outcome, event.reason) == ("failure", "invalid_refresh_token")
    assert event.details == {"client_id": "rider-app"}


def test_another_client_cannot_use_the_token_and_does_not_burn_it(flow: Flow) -> None:
    g1 = flow.issue()
    expect(flow, "client_mismatch", g1.refresh_token, client_id="evil-app", now=NOW + 1)
    assert flow.refresh(g1.refresh_token, now=NOW + 2).family_id == g1.family_id
    assert flow.events("auth.refresh_reuse") == []


def test_an_expired_refresh_token_is_refused_and_nothing_is_revoked(flow: Flow) -> None:
    g1 = flow.issue()
    expect(flow, "expired", g1.refresh_token, now=NOW + REFRESH_TTL)
    assert flow.verify(g1)["jti"] == g1.access.jti
    [event] = flow.events("auth.token_refresh")
    assert (event.outcome, event.reason) == ("failure", "expired")


def test_scope_can_narrow_on_refresh_but_never_widen(flow: Flow) -> None:
    g1 = flow.issue()
    narrow = flow.refresh(g1.refresh_token, scope="orders:read", now=NOW + 1)
    assert flow.verify(narrow)["scope"] == "orders:read"
    err = expect(flow, "scope_exceeded", narrow.refresh_token, scope="orders:read admin",
                 now=NOW + 2)  # fmt: skip
    assert err.oauth_error == "invalid_scope"
    full = flow.refresh(narrow.refresh_token, now=NOW + 3)  # not consumed by the refusal
    assert flow.verify(full)["scope"] == "orders:read orders:write"  # the original grant


def test_a_dpop_bound_refresh_token_needs_the_same_key(
    flow: Flow, keys: dict[str, TestKey]
) -> None:
    jkt = thumbprint(keys["holder"])
    g1 = flow.issue(jkt=jkt)
    expect(flow, "dpop_mismatch", g1.refresh_token, now=NOW + 1)
    expect(flow, "dpop_mismatch", g1.refresh_token, jkt=thumbprint(keys["holder-ed"]), now=NOW + 1)
    g2 = flow.refresh(g1.refresh_token, jkt=jkt, now=NOW + 2)
    assert g2.access.token_type == "DPoP"
    proof = dpop_proof(keys["holder"], g2.access.token, method="GET", url=URL, now=NOW + 3)
    claims = flow.verifier.verify(g2.access.token, now=NOW + 3, dpop=proof, method="GET", url=URL)
    assert claims["cnf"] == {"jkt": jkt}


def test_the_family_lifetime_cap_ends_rotation() -> None:
    store = MemoryRefreshTokenStore()
    service = TokenService(
        KeySet.generate("EdDSA"), issuer=ISSUER, audience=AUDIENCE, refresh_token_ttl=3600,
        refresh_max_lifetime=5000, refresh_store=store, deny_list=MemoryDenyList(),
    )  # fmt: skip
    g = service.issue(subject="u-1", client_id="app", refresh=True, now=NOW)
    g = service.refresh(g.refresh_token or "", client_id="app", now=NOW + 3000)
    rec = store.get(hash_refresh_token(g.refresh_token or ""))
    assert rec is not None and rec.expires_at == NOW + 5000  # capped, not NOW + 6600
    with pytest.raises(GrantRejected) as exc:
        service.refresh(g.refresh_token or "", client_id="app", now=NOW + 5000)
    assert exc.value.code == "expired"


# -- revocation ------------------------------------------------------------------------------


def test_revoking_a_refresh_token_revokes_its_family_and_access_tokens(flow: Flow) -> None:
    g1 = flow.issue()
    g2 = flow.refresh(g1.refresh_token, now=NOW + 10)
    assert flow.service.revoke_refresh_token(g1.refresh_token or "", client_id="rider-app",
                                             now=NOW + 20)  # fmt: skip
    assert flow.rejected(g1) == "revoked" and flow.rejected(g2) == "revoked"
    expect(flow, "revoked", g2.refresh_token, now=NOW + 21)
    assert not flow.service.revoke_refresh_token("never-issued", now=NOW)
    [event] = flow.events("auth.token_revoke")
    assert (event.outcome, event.reason) == ("success", "revoked")
    assert event.details["family"] == g1.family_id
    assert set(event.details["jtis"]) == {g1.access.jti, g2.access.jti}


def test_only_the_owning_client_may_revoke_its_refresh_token(flow: Flow) -> None:
    g1 = flow.issue()
    with pytest.raises(GrantRejected) as exc:
        flow.service.revoke_refresh_token(g1.refresh_token or "", client_id="evil", now=NOW)
    assert exc.value.code == "client_mismatch"
    assert flow.verify(g1)["jti"] == g1.access.jti


def test_an_operator_revokes_a_family_and_is_the_audited_actor(flow: Flow) -> None:
    g1 = flow.issue()
    operator = Principal(subject="staff-7", type="staff", roles=("support",))
    with request_context(operator):
        assert flow.service.revoke_family(g1.family_id or "", now=NOW + 5, reason="logout")
    assert not flow.service.revoke_family("no-such-family", now=NOW + 5)
    assert flow.rejected(g1) == "revoked"
    [event] = flow.events("auth.token_revoke")
    assert event.actor is not None and event.actor["id"] == "staff-7"
    assert event.reason == "logout"


def test_revoking_one_access_token(flow: Flow) -> None:
    g1 = flow.issue()
    g2 = flow.issue(subject="u-2002")
    flow.service.revoke_access_token(g1.access.jti, expires_at=g1.access.expires_at,
                                     client_id="rider-app", now=NOW + 1)  # fmt: skip
    assert flow.rejected(g1) == "revoked"
    # Past exp, within the verifiers' leeway, it is still refused as revoked.
    assert flow.rejected(g1, now=g1.access.expires_at + LEEWAY - 1) == "revoked"
    flow.assert_denied_until(g1.access.jti, g1.access.expires_at + LEEWAY, revoked_at=NOW + 1)
    assert flow.verify(g2)["sub"] == "u-2002"
    [event] = flow.events("auth.token_revoke")
    assert event.details == {"jti": g1.access.jti, "client_id": "rider-app"}
