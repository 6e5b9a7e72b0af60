"""TokenService and its key set: issue → TokenVerifier round trips, rotation, JWKS.

Time is always ``now=``. Every token here is checked by the strict :class:`TokenVerifier`
built from what the service publishes, never by decoding it loosely.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from riskguard.auth import (
    GRANT_CODES,
    AccessToken,
    GrantRejected,
    IssuerKey,
    KeySet,
    MemoryDenyList,
    MemoryRefreshTokenStore,
    TokenGrant,
    TokenRejected,
    TokenService,
    TokenVerifier,
    jwk_thumbprint,
)
from riskguard.auth._jwks import _PRIVATE_MEMBERS
from riskguard.config import AuthSettings
from riskguard.errors import ConfigError, KeyManagementError
from tests.auth._tokens import TestKey, dpop_proof, thumbprint
from tests.doubles import RecordingAudit

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
NOW = 1_750_000_000
TTL = 300
LEEWAY = 30
ALGS = ("EdDSA", "ES256", "RS256", "HS256")
URL = "https://api.o2o.test/orders"


@pytest.fixture(scope="module")
def key_sets() -> dict[str, KeySet]:
    """One key set per algorithm (RSA generation is slow: made once per module)."""
    return {alg: KeySet.generate(alg) for alg in ALGS}


def make_service(keys: KeySet, **options: Any) -> TokenService:
    kwargs: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE,
                              "access_token_ttl": TTL, "leeway": LEEWAY}  # fmt: skip
    kwargs.update(options)
    return TokenService(keys, **kwargs)


def verifier_for(service: TokenService, *, now: float = NOW, **options: Any) -> TokenVerifier:
    """A resource server's verifier: from the published JWKS (HS256: the shared secret)."""
    if service.keys.current.symmetric:
        return service.verifier(now=now, **options)
    kwargs: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": LEEWAY,
                              "max_lifetime": TTL}  # fmt: skip
    kwargs.update(options)
    return TokenVerifier(service.jwks(now=now), **kwargs)


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def seg(s: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        return value

    head, body, _ = token.split(".")
    return seg(head), seg(body)


# -- issue → verify ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_issued_tokens_verify_strictly(key_sets: dict[str, KeySet], alg: str) -> None:
    service = make_service(key_sets[alg])
    grant = service.issue(
        subject="u-1001", client_id="rider-app", scope="orders:read orders:write",
        tenant="merchant-42", roles=["customer"], now=NOW,
    )  # fmt: skip
    verified = verifier_for(service).verify_complete(grant.access.token, now=NOW + 1)
    assert verified.header == {"alg": alg, "typ": "at+jwt", "kid": service.keys.current.kid}
    assert verified.kid == service.keys.current.kid == grant.access.kid
    assert verified.claims == {
        "iss": ISSUER,
        "sub": "u-1001",
        "aud": AUDIENCE,
        "exp": NOW + TTL,
        "iat": NOW,
        "jti": grant.access.jti,
        "client_id": "rider-app",
        "scope": "orders:read orders:write",
        "tenant": "merchant-42",
        "roles": ["customer"],
    }
    assert (grant.access.token_type, grant.access.expires_in) == ("Bearer", TTL)
    assert grant.refresh_token is None and grant.family_id is None


@pytest.mark.parametrize("alg", ALGS)
def test_a_token_is_refused_once_expired_and_by_other_keys(
    key_sets: dict[str, KeySet], alg: str
) -> None:
    service = make_service(key_sets[alg])
    token = service.issue(subject="u-1", client_id="app", now=NOW).access.token
    with pytest.raises(TokenRejected) as exc:
        verifier_for(service).verify(token, now=NOW + TTL + LEEWAY)
    assert exc.value.code == "expired"
    stranger = make_service(KeySet.generate("EdDSA" if alg != "EdDSA" else "ES256"))
    with pytest.raises(TokenRejected) as exc:
        verifier_for(stranger).verify(token, now=NOW)
    assert exc.value.code in ("bad_alg", "unknown_kid")


def test_successive_tokens_have_unique_ids(key_sets: dict[str, KeySet]) -> None:
    service = make_service(key_sets["EdDSA"])
    jtis = {service.issue(subject="u-1", client_id="app", now=NOW).access.jti for _ in range(50)}
    assert len(jtis) == 50


def test_claims_are_normalised(key_sets: dict[str, KeySet]) -> None:
    service = make_service(key_sets["EdDSA"])
    grant = service.issue(
        subject="svc-pos-7", client_id="pos-7", scope=["menu:write", "orders:read", "menu:write"],
        roles=("merchant", "merchant"), audience="menu-api", subject_type="service",
        extra_claims={"auth_time": NOW - 60, "acr": "urn:o2o:mfa", "amr": ("pwd", "otp")},
        now=NOW,
    )  # fmt: skip
    claims = verifier_for(service, audience="menu-api").verify(grant.access.token, now=NOW)
    assert claims["scope"] == "menu:write orders:read"
    assert claims["roles"] == ["merchant"]
    assert claims["amr"] == ["pwd", "otp"] and claims["auth_time"] == NOW - 60
    assert "tenant" not in claims and "cnf" not in claims
    bare = service.issue(subject="u-1", client_id="app", now=NOW).access
    assert "scope" not in parts(bare.token)[1] and bare.scope == ""


def test_dpop_bound_tokens_need_the_holders_proof(
    key_sets: dict[str, KeySet], keys: dict[str, TestKey]
) -> None:
    service = make_service(key_sets["ES256"])
    holder = keys["holder"]
    grant = service.issue(subject="u-1", client_id="app", jkt=thumbprint(holder), now=NOW)
    assert grant.access.token_type == "DPoP"
    assert grant.to_response()["token_type"] == "DPoP"
    verifier = verifier_for(service)
    token = grant.access.token
    proof = dpop_proof(holder, token, method="GET", url=URL, now=NOW)
    claims = verifier.verify(token, now=NOW, dpop=proof, method="GET", url=URL)
    assert claims["cnf"] == {"jkt": jwk_thumbprint(holder.public_jwk)}
    with pytest.raises(TokenRejected) as exc:
        verifier.verify(token, now=NOW)
    assert exc.value.code == "dpop_required"


def test_the_token_response_follows_rfc_6749(key_sets: dict[str, KeySet]) -> None:
    service = make_service(
        key_sets["EdDSA"], refresh_store=MemoryRefreshTokenStore(), deny_list=MemoryDenyList()
    )
    grant = service.issue(subject="u-1", client_id="app", scope="a b", refresh=True, now=NOW)
    body = grant.to_response()
    assert body == {
        "access_token": grant.access.token,
        "token_type": "Bearer",
        "expires_in": TTL,
        "scope": "a b",
        "refresh_token": grant.refresh_token,
    }
    assert len(grant.refresh_token or "") == 43  # token_urlsafe(32)
    assert grant.access.token not in repr(grant) and (grant.refresh_token or "") not in repr(grant)


# -- keys: JWKS and rotation ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_the_jwks_publishes_current_and_next_public_keys_only(
    key_sets: dict[str, KeySet], alg: str
) -> None:
    keys = key_sets[alg]
    jwks = keys.jwks(now=NOW)
    assert [k["kid"] for k in jwks["keys"]] == [keys.current.kid, keys.next.kid]
    for jwk in jwks["keys"]:
        assert not _PRIVATE_MEMBERS & jwk.keys()
        assert jwk["alg"] == alg and jwk["use"] == "sig" and "key_ops" not in jwk
        assert jwk["kid"] == jwk_thumbprint(jwk)  # kid is the RFC 7638 thumbprint
    assert keys.verification_jwks(now=NOW) == jwks
    TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)  # a verifier accepts it as is


def test_hs256_secrets_never_reach_the_public_jwks(key_sets: dict[str, KeySet]) -> None:
    keys = key_sets["HS256"]
    assert keys.jwks(now=NOW) == {"keys": []}
    private = keys.verification_jwks(now=NOW)
    assert [k["kty"] for k in private["keys"]] == ["oct", "oct"]
    assert keys.current.public_jwk() is None
    assert repr(keys.current) == f"IssuerKey(kid={keys.current.kid!r}, alg='HS256')"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "HS256"])
def test_rotation_keeps_old_tokens_valid_until_they_expire(alg: str) -> None:
    keys = KeySet.generate(alg) if alg != "RS256" else KeySet(
        IssuerKey.generate("RS256"), IssuerKey.generate("RS256"))  # fmt: skip
    service = make_service(keys)
    first, second = keys.current.kid, keys.next.kid
    before = verifier_for(service, now=NOW)  # a resource server's cached JWKS
    old = service.issue(subject="u-1", client_id="app", now=NOW).access

    rotated_at = NOW + 100
    assert service.rotate_keys(now=rotated_at).kid == second
    new = service.issue(subject="u-1", client_id="app", now=rotated_at).access
    assert (old.kid, new.kid) == (first, second)
    # The next key was published before it signed: the cached verifier knows it already.
    assert before.verify(new.token, now=rotated_at)["jti"] == new.jti
    # A verifier refreshed after the rotation still accepts the old key's live tokens.
    after = verifier_for(service, now=rotated_at)
    assert after.verify(old.token, now=old.expires_at + LEEWAY - 1)["jti"] == old.jti
    assert after.verify(new.token, now=rotated_at)["jti"] == new.jti

    # The old key stays published exactly until its last token can no longer be accepted.
    retire = rotated_at + TTL + LEEWAY
    assert retire >= old.expires_at + LEEWAY
    assert first in [k["kid"] for k in service.keys.verification_jwks(now=retire - 1)["keys"]]
    published = [k["kid"] for k in service.keys.verification_jwks(now=retire)["keys"]]
    assert published == [second, service.keys.next.kid] and first not in published
    with pytest.raises(TokenRejected) as exc:
        verifier_for(service, now=retire).verify(old.token, now=old.expires_at)
    assert exc.value.code == "unknown_kid"


def test_rotation_can_migrate_to_another_algorithm() -> None:
    keys = KeySet.generate("EdDSA")
    service = make_service(keys)
    es = IssuerKey.generate("ES256")
    service.rotate_keys(now=NOW, next_key=es)  # EdDSA next becomes current; ES256 is next
    service.rotate_keys(now=NOW + 10)
    assert service.keys.current is es and service.keys.next.alg == "ES256"
    token = service.issue(subject="u-1", client_id="app", now=NOW + 10).access.token
    assert parts(token)[0]["alg"] == "ES256"
    published = [k["alg"] for k in service.jwks(now=NOW + 10)["keys"]]
    assert published == ["ES256", "ES256", "EdDSA", "EdDSA"]
    assert verifier_for(service, now=NOW + 10).verify(token, now=NOW + 10)["sub"] == "u-1"


def test_a_key_set_refuses_duplicate_kids_and_negative_overlap() -> None:
    a = IssuerKey.generate("EdDSA", kid="k1")
    with pytest.raises(KeyManagementError, match="kid"):
        KeySet(a, IssuerKey.generate("EdDSA", kid="k1"))
    keys = KeySet(a)
    with pytest.raises(KeyManagementError, match="kid"):
        keys.rotate(now=NOW, overlap=10, next_key=IssuerKey.generate("EdDSA", kid="k1"))
    assert keys.current is a  # a refused rotation changes nothing
    with pytest.raises(ValueError, match="overlap"):
        keys.rotate(now=NOW, overlap=-1)


# -- keys: strength and storage ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 31])
def test_short_hs256_secrets_are_refused(size: int) -> None:
    with pytest.raises(KeyManagementError, match="256 bits"):
        IssuerKey(b"k" * size, alg="HS256")


def test_a_256_bit_hs256_secret_is_accepted_and_round_trips() -> None:
    key = IssuerKey(bytes(range(32)), alg="HS256", kid="hs-main")
    service = make_service(KeySet(key, IssuerKey.generate("HS256")))
    token = service.issue(subject="u-1", client_id="app", now=NOW).access.token
    assert service.verifier(now=NOW).verify(token, now=NOW)["sub"] == "u-1"
    assert parts(token)[0]["kid"] == "hs-main"


@pytest.mark.parametrize(
    "make",
    [
        lambda: IssuerKey(rsa.generate_private_key(65537, 1024), alg="RS256"),
        lambda: IssuerKey(ec.generate_private_key(ec.SECP384R1()), alg="ES256"),
        lambda: IssuerKey(ec.generate_private_key(ec.SECP256R1()), alg="EdDSA"),
        lambda: IssuerKey(b"k" * 32, alg="none"),
        lambda: IssuerKey("a string secret"),
        lambda: IssuerKey.generate("PS256"),
    ],
    ids=["rsa-1024", "ec-p384", "alg-mismatch", "alg-none", "str-secret", "unsupported"],
)
def test_weak_or_mismatched_keys_are_refused(make: Any) -> None:
    with pytest.raises(KeyManagementError):
        make()


def test_private_keys_leave_only_encrypted() -> None:
    key = IssuerKey.generate("EdDSA")
    pem = key.to_pem(b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    again = IssuerKey.from_pem(pem, password=b"correct horse")
    assert (again.kid, again.alg) == (key.kid, key.alg)
    with pytest.raises(KeyManagementError, match="does not load"):
        IssuerKey.from_pem(pem, password=b"wrong")
    with pytest.raises(KeyManagementError, match="encrypted"):
        key.to_pem(b"")
    with pytest.raises(KeyManagementError, match="PEM"):
        IssuerKey.generate("HS256").to_pem(b"pw")


# -- what may go into a token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"iss": "https://evil"}, "set by the token service"),
        ({"cnf": {"jkt": "x"}}, "set by the token service"),
        ({"password": "hunter2"}, "secret or personal"),
        ({"Phone": "opaque"}, "secret or personal"),
        ({"note": "card 4111 1111 1111 1111"}, "payment card"),
        ({"buyer": {"contact": "+86 13812345678"}}, "mobile phone"),
        ({"owner": ["ok", "someone@example.com"]}, "e-mail"),
        ({"kyc": "11010519491231002X"}, "resident identity"),
        ({"ratio": float("nan")}, "JSON"),
        ({"blob": "x" * 3000}, "2048 bytes"),
    ],
)
def test_sensitive_or_reserved_claims_are_refused(
    key_sets: dict[str, KeySet], claims: dict[str, Any], match: str
) -> None:
    service = make_service(key_sets["EdDSA"])
    with pytest.raises(ValueError, match=match) as exc:
        service.issue(subject="u-1", client_id="app", extra_claims=claims, now=NOW)
    for value in ("hunter2", "4111", "13812345678", "someone@", "11010519491231002X"):
        assert value not in str(exc.value)  # the message names the claim, never its value


def test_opaque_ids_are_not_mistaken_for_personal_data(key_sets: dict[str, KeySet]) -> None:
    service = make_service(key_sets["EdDSA"])
    for ok in ("u-1001", "4111111111111112", "order-20250615-000123", "a3f9c2e1d4b5"):
        service.issue(subject=ok, client_id="app", extra_claims={"ref": ok}, now=NOW)


@pytest.mark.parametrize("subject", ["someone@example.com", "13812345678", ""])
def test_a_subject_must_be_an_opaque_id(key_sets: dict[str, KeySet], subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        make_service(key_sets["EdDSA"]).issue(subject=subject, client_id="app", now=NOW)


@pytest.mark.parametrize(
    "arguments",
    [
        {"client_id": ""},
        {"client_id": "c" * 256},
        {"scope": 'orders:"read"'},
        {"scope": ["ok", ""]},
        {"roles": "admin"},
        {"roles": ["admin", ""]},
        {"tenant": ""},
        {"jkt": "not-a-thumbprint"},
        {"subject_type": "robot"},
        {"audience": ""},
    ],
)
def test_malformed_arguments_are_refused(
    key_sets: dict[str, KeySet], arguments: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {"subject": "u-1", "client_id": "app", "now": NOW}
    kwargs.update(arguments)
    with pytest.raises(ValueError):
        make_service(key_sets["EdDSA"]).issue(**kwargs)


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"access_token_ttl": 10},
        {"access_token_ttl": 86_401},
        {"refresh_token_ttl": 100},  # shorter than an access token
        {"refresh_token_ttl": 3600, "refresh_max_lifetime": 60},
        {"leeway": 301},
        {"leeway": float("inf")},
        {"issuer": ""},
        {"refresh_store": MemoryRefreshTokenStore()},  # without a deny-list
    ],
)
def test_bad_options_are_config_errors(
    key_sets: dict[str, KeySet], options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError):
        make_service(key_sets["EdDSA"], **options)


def test_refresh_tokens_need_a_refresh_store(key_sets: dict[str, KeySet]) -> None:
    service = make_service(key_sets["EdDSA"])
    with pytest.raises(ConfigError, match="refresh store"):
        service.issue(subject="u-1", client_id="app", refresh=True, now=NOW)
    with pytest.raises(ConfigError, match="deny-list"):
        service.revoke_access_token("jti-1", expires_at=NOW + 10, now=NOW)


def test_from_settings_uses_the_auth_section(key_sets: dict[str, KeySet]) -> None:
    settings = AuthSettings(issuer=ISSUER, audience=AUDIENCE, access_token_ttl_s=600,
                            leeway_s=10, max_lifetime_s=900)  # fmt: skip
    service = TokenService.from_settings(settings, key_sets["EdDSA"])
    token = service.issue(subject="u-1", client_id="app", now=NOW).access.token
    claims = TokenVerifier.from_settings(settings, service.jwks(now=NOW)).verify(token, now=NOW)
    assert claims["exp"] - claims["iat"] == 600
    with pytest.raises(ConfigError, match="max_lifetime_s"):
        TokenService.from_settings(
            AuthSettings(access_token_ttl_s=3600, max_lifetime_s=600), key_sets["EdDSA"]
        )
    with pytest.raises(ConfigError, match="algorithm"):
        TokenService.from_settings(AuthSettings(algorithm="RS256"), key_sets["EdDSA"])


# -- audit and errors ----------------------------------------------------------------------


def test_issuing_is_audited_with_ids_only(key_sets: dict[str, KeySet]) -> None:
    audit = RecordingAudit()
    service = make_service(key_sets["EdDSA"], refresh_store=MemoryRefreshTokenStore(),
                           deny_list=MemoryDenyList(), audit=audit)  # fmt: skip
    grant = service.issue(subject="u-1", client_id="app", tenant="m-1", refresh=True, now=NOW)
    [event] = audit.events
    assert (event.action, event.outcome) == ("auth.token_issue", "success")
    assert event.details == {"jti": grant.access.jti, "client_id": "app",
                             "family": grant.family_id, "generation": 1}  # fmt: skip
    assert event.actor is not None and (event.actor.subject, event.actor.domain) == ("u-1", "m-1")
    assert event.resource is not None and event.resource.id == grant.access.jti


def test_grant_errors_carry_stable_oauth_errors() -> None:
    assert set(GRANT_CODES.values()) == {"invalid_grant", "invalid_scope"}
    err = GrantRejected("reused", 'the "token" was reused')
    assert (err.code, err.oauth_error, err.status_code) == ("reused", "invalid_grant", 400)
    assert err.to_dict() == {"error": "invalid_grant",
                             "error_description": "the ?token? was reused"}  # fmt: skip
    assert GrantRejected("scope_exceeded", "x").oauth_error == "invalid_scope"
    with pytest.raises(ValueError, match="unknown grant error code"):
        GrantRejected("nope", "x")


def test_reprs_hold_no_token_or_key_material(key_sets: dict[str, KeySet]) -> None:
    service = make_service(key_sets["ES256"])
    access = service.issue(subject="u-1", client_id="app", now=NOW).access
    assert isinstance(access, AccessToken) and access.token not in repr(access)
    assert isinstance(TokenGrant(access), TokenGrant)
    assert repr(service.keys).startswith("KeySet(current=")
    assert "PRIVATE" not in repr(service) and service.keys.current.kid in repr(service)
