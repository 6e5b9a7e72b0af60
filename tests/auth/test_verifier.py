"""TokenVerifier: valid tokens per algorithm, one refusal per check, keys, DPoP, stores.

Time is always passed as ``now=``; keys are generated per session (tests/auth/conftest.py).
The attack corpus (test_attack_corpus.py) covers the attack classes exhaustively; this file
pins each check, its boundaries and the public API.
"""

from __future__ import annotations

import base64
import json
import string
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from riskguard.auth import (
    CODES,
    DEFAULT_REQUIRED_CLAIMS,
    DenyList,
    MemoryDenyList,
    MemoryReplayCache,
    ReplayCache,
    TokenRejected,
    TokenVerifier,
    jwk_thumbprint,
)
from riskguard.auth._codec import MAX_DEPTH, StrictJSONError, _depth, loads_object
from riskguard.config import AuthSettings
from riskguard.errors import (
    ConfigError,
    KeyManagementError,
    RiskGuardError,
    StorageError,
    TokenError,
)
from tests.auth._tokens import (
    AUDIENCE,
    DROP,
    ISSUER,
    LEEWAY,
    MAX_LIFETIME,
    NOW,
    TestKey,
    b64,
    claims,
    dpop_proof,
    header,
    jwks,
    mint,
    nested,
    thumbprint,
    with_signature,
)

ALGS = ("HS256", "RS256", "ES256", "EdDSA")
REVOKED = "jti-revoked-0001"
URL = "https://api.o2o.test/orders"

Keys = dict[str, TestKey]


def make_verifier(keys: Keys, *trusted: str, **options: Any) -> TokenVerifier:
    names = trusted or ALGS
    kwargs: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway": LEEWAY,
        "max_lifetime": MAX_LIFETIME,
        "deny_list": MemoryDenyList({REVOKED: None}),
    }
    kwargs.update(options)
    return TokenVerifier(jwks(*(keys[n] for n in names)), **kwargs)


@pytest.fixture(scope="module")
def verifier(keys: Keys) -> TokenVerifier:
    return make_verifier(keys)


def rejected(verifier: TokenVerifier, token: Any, **kwargs: Any) -> TokenRejected:
    kwargs.setdefault("now", NOW)
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token, **kwargs)
    return info.value


# -- valid tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_a_valid_token_passes_for_each_algorithm(
    verifier: TokenVerifier, keys: Keys, alg: str
) -> None:
    body = claims()
    token = mint(keys[alg], body)
    assert verifier.verify(token, now=NOW) == body
    assert verifier.verify(token.encode("ascii"), now=NOW) == body
    full = verifier.verify_complete(token, now=NOW)
    assert (full.kid, full.header, full.claims) == (keys[alg].kid, header(keys[alg]), body)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_typ_is_compared_case_insensitively_with_or_without_application(
    verifier: TokenVerifier, keys: Keys, typ: str
) -> None:
    token = mint(keys["EdDSA"], claims(), header(keys["EdDSA"], typ=typ))
    assert verifier.verify(token, now=NOW)["sub"] == "u-1001"


def test_a_configured_typ_with_application_prefix_matches_the_short_form(keys: Keys) -> None:
    v = make_verifier(keys, "EdDSA", typ="application/AT+JWT")
    assert v.verify(mint(keys["EdDSA"]), now=NOW)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": [AUDIENCE]},
        {"aud": ["payments-api", AUDIENCE]},
        {"iat": NOW - 10.5, "exp": NOW + 100.25, "nbf": NOW - 1.5},
        {"nbf": NOW + LEEWAY},
        {"exp": NOW - LEEWAY + 1, "iat": NOW - 100},
        {"iat": NOW + LEEWAY, "exp": NOW + LEEWAY + 60},
        {"iat": NOW - 100, "exp": NOW - 100 + MAX_LIFETIME},
        {"deep": nested(15)},  # 16 with the payload object itself
        {"scope": "orders:read orders:write", "roles": ["customer"], "tenant": "m-1"},
    ],
    ids=[
        "aud-list",
        "aud-list-2",
        "float-dates",
        "nbf-at-leeway",
        "exp-in-leeway",
        "iat-at-leeway",
        "lifetime-exactly-max",
        "depth-16",
        "extra-claims",
    ],
)
def test_valid_variants_pass(verifier: TokenVerifier, keys: Keys, overrides: Any) -> None:
    body = claims(**overrides)
    assert verifier.verify(mint(keys["ES256"], body), now=NOW) == body


def test_without_iat_the_lifetime_is_measured_from_now(keys: Keys) -> None:
    v = make_verifier(keys, "EdDSA", required_claims=("sub",), deny_list=None)
    ok = mint(keys["EdDSA"], claims(iat=DROP, jti=DROP, exp=NOW + MAX_LIFETIME + LEEWAY))
    assert v.verify(ok, now=NOW)
    long = mint(keys["EdDSA"], claims(iat=DROP, jti=DROP, exp=NOW + MAX_LIFETIME + LEEWAY + 1))
    assert rejected(v, long).code == "lifetime_too_long"


def test_now_defaults_to_the_current_time(verifier: TokenVerifier, keys: Keys) -> None:
    fresh = mint(keys["EdDSA"], claims(now=time.time()))
    assert verifier.verify(fresh)
    old = mint(keys["EdDSA"], claims(now=NOW))  # valid only around NOW, long past
    with pytest.raises(TokenRejected) as info:
        verifier.verify(old)
    assert info.value.code == "expired"


def test_now_may_be_an_aware_datetime_but_not_a_naive_one(
    verifier: TokenVerifier, keys: Keys
) -> None:
    token = mint(keys["EdDSA"])
    assert verifier.verify(token, now=datetime.fromtimestamp(NOW, UTC))
    with pytest.raises(ValueError, match="aware"):
        verifier.verify(token, now=datetime.fromtimestamp(NOW))


# -- one refusal per check ----------------------------------------------------------------

Build = Callable[[Keys], tuple[TokenVerifier | None, str, dict[str, Any]]]


def _tok(alg: str = "EdDSA", hdr: Any = None, **claim_overrides: Any) -> Build:
    def build(k: Keys) -> tuple[TokenVerifier | None, str, dict[str, Any]]:
        h = header(k[alg], **hdr) if isinstance(hdr, dict) else hdr
        return None, mint(k[alg], claims(**claim_overrides), h), {}

    return build


def _raw(token: Callable[[Keys], str]) -> Build:
    return lambda k: (None, token(k), {})


def _with(build: Build, **options: Any) -> Build:
    def wrapped(k: Keys) -> tuple[TokenVerifier | None, str, dict[str, Any]]:
        _, token, kwargs = build(k)
        return make_verifier(k, **options), token, kwargs

    return wrapped


def _bound(**proof: Any) -> Build:
    def build(k: Keys) -> tuple[TokenVerifier | None, str, dict[str, Any]]:
        token = mint(k["EdDSA"], claims(cnf={"jkt": thumbprint(k["holder"])}))
        kwargs: dict[str, Any] = {"method": "POST", "url": URL}
        if proof:
            kwargs["dpop"] = dpop_proof(k["holder"], token, **proof)
        return None, token, kwargs

    return build


CHECKS: list[tuple[str, Build, str]] = [
    ("size-cap", _tok(pad="x" * 9000), "too_large"),
    ("compact-form", _raw(lambda k: mint(k["EdDSA"]).rsplit(".", 1)[0]), "malformed"),
    ("header-json", _raw(lambda k: mint(k["EdDSA"], hdr=b"[1]")), "bad_json"),
    ("payload-json", _raw(lambda k: mint(k["EdDSA"], b'{"sub":"a","sub":"b"}')), "bad_json"),
    ("header-allow-list", _tok(hdr={"jku": "https://evil.test/k"}), "bad_header"),
    ("crit", _tok(hdr={"crit": ["urn:x"], "urn:x": 1}), "unsupported_crit"),
    ("alg-none", _tok(hdr={"alg": "none"}), "bad_alg"),
    ("alg-pinned", _tok(hdr={"alg": "ES256"}), "bad_alg"),
    ("kid", _tok(hdr={"kid": "nope"}), "unknown_kid"),
    ("typ", _tok(hdr={"typ": "JWT"}), "bad_typ"),
    ("typ-missing", _tok(hdr={"typ": DROP}), "bad_typ"),
    ("signature", _raw(lambda k: with_signature(mint(k["EdDSA"]), bytes(64))), "bad_signature"),
    ("required-claim", _tok(client_id=DROP), "missing_claim"),
    ("exp-required", _tok(exp=DROP), "missing_claim"),
    ("numeric-date", _tok(exp=str(NOW + 60)), "bad_claim_type"),
    ("string-claim", _tok(sub=1001), "bad_claim_type"),
    ("aud-type", _tok(aud={"0": AUDIENCE}), "bad_claim_type"),
    ("exp", _tok(exp=NOW - LEEWAY, iat=NOW - 300), "expired"),
    ("nbf", _tok(nbf=NOW + LEEWAY + 1), "not_yet_valid"),
    ("iat", _tok(iat=NOW + LEEWAY + 1, exp=NOW + 600), "issued_in_future"),
    ("lifetime", _tok(iat=NOW - 100, exp=NOW - 99 + MAX_LIFETIME), "lifetime_too_long"),
    ("iss", _tok(iss=ISSUER + "/"), "bad_issuer"),
    ("aud", _tok(aud=["payments-api"]), "bad_audience"),
    ("deny-list", _tok(jti=REVOKED), "revoked"),
    ("jti-with-deny-list", _with(_tok(jti=DROP), required_claims=("sub",)), "missing_claim"),
    ("cnf", _bound(), "dpop_required"),
    ("dpop", _bound(method="GET"), "bad_dpop"),
]


@pytest.mark.parametrize(("build", "code"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_each_check_refuses_with_its_code(
    verifier: TokenVerifier, keys: Keys, build: Build, code: str
) -> None:
    custom, token, kwargs = build(keys)
    exc = rejected(custom or verifier, token, **kwargs)
    assert exc.code == code
    # Messages say which check failed and never echo the token or what it carries.
    text = str(exc) + exc.diagnostics()
    for part in token.split("."):
        assert not part or part not in text
    for leak in ("u-1001", "rider-app", "orders:read", "nope", "evil.test", keys["HS256"].kid):
        assert leak not in text


def test_every_code_is_exercised_here() -> None:
    assert {c[2] for c in CHECKS} == CODES


@pytest.mark.parametrize(
    ("field", "value"),
    [("exp", True), ("exp", None), ("exp", -1), ("exp", 10**30), ("exp", [NOW]),
     ("nbf", "0"), ("iat", False), ("iss", None), ("aud", [AUDIENCE, 7]), ("jti", 12)],
)  # fmt: skip
def test_claim_types_are_strict(
    verifier: TokenVerifier, keys: Keys, field: str, value: Any
) -> None:
    assert rejected(verifier, mint(keys["ES256"], claims(**{field: value}))).code == (
        "bad_claim_type"
    )


_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(
    ("forge", "fragment"),
    [
        (lambda raw: bytes(64), "outside [1, n-1]"),
        (lambda raw: bytes(32) + raw[32:], "outside [1, n-1]"),
        (lambda raw: raw[:32] + bytes(32), "outside [1, n-1]"),
        (lambda raw: _N.to_bytes(32, "big") + raw[32:], "outside [1, n-1]"),
        (lambda raw: raw[:32] + _N.to_bytes(32, "big"), "outside [1, n-1]"),
        (lambda raw: b"\xff" * 64, "outside [1, n-1]"),
        (lambda raw: b"\x30\x44\x02\x20" + raw[:32] + b"\x02\x20" + raw[32:], "64 bytes"),
    ],
    ids=["zero", "r-zero", "s-zero", "r-n", "s-n", "all-ff", "der"],
)
def test_es256_signature_form_is_refused_before_any_ecdsa(
    verifier: TokenVerifier,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    forge: Callable[[bytes], bytes],
    fragment: str,
) -> None:
    token = mint(keys["ES256"])
    sig = token.rsplit(".", 1)[1]
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    calls: list[bytes] = []
    real = ECAlgorithm.verify

    def spy(self: ECAlgorithm, msg: bytes, key: Any, signature: bytes) -> bool:
        calls.append(signature)
        return real(self, msg, key, signature)

    monkeypatch.setattr(ECAlgorithm, "verify", spy)
    exc = rejected(verifier, with_signature(token, forge(raw)))
    assert (exc.code, fragment in exc.message, calls) == ("bad_signature", True, [])
    assert verifier.verify(token, now=NOW) and calls == [raw]  # the spy does see real use


# -- key selection ------------------------------------------------------------------------


def test_a_sole_key_is_selected_without_kid_and_keeps_its_pin(keys: Keys) -> None:
    v = make_verifier(keys, "RS256")
    assert v.verify(mint(keys["RS256"], hdr=header(keys["RS256"], kid=DROP)), now=NOW)
    confused = mint(keys["HS256"], hdr=header(keys["HS256"], kid=DROP))
    assert rejected(v, confused).code == "bad_alg"
    assert rejected(v, mint(keys["RS256"], hdr=header(keys["RS256"], kid="x"))).code == (
        "unknown_kid"
    )


def test_without_kid_several_keys_are_ambiguous(verifier: TokenVerifier, keys: Keys) -> None:
    token = mint(keys["RS256"], hdr=header(keys["RS256"], kid=DROP))
    assert rejected(verifier, token).code == "unknown_kid"


@pytest.mark.parametrize("kid", [None, 1, ["rs-1"], {"kid": "rs-1"}])
def test_a_kid_that_is_not_a_string_is_a_bad_header(
    verifier: TokenVerifier, keys: Keys, kid: Any
) -> None:
    assert rejected(verifier, mint(keys["RS256"], hdr=header(keys["RS256"], kid=kid))).code == (
        "bad_header"
    )


def test_another_key_under_a_trusted_kid_does_not_verify(
    verifier: TokenVerifier, keys: Keys
) -> None:
    assert keys["stranger"].kid == keys["ES256"].kid
    assert rejected(verifier, mint(keys["stranger"])).code == "bad_signature"


def test_key_ids_lists_the_trusted_keys(verifier: TokenVerifier, keys: Keys) -> None:
    assert set(verifier.key_ids) == {"hs-1", "rs-1", "es-1", "ed-1"}
    assert keys["HS256"].public_jwk["k"] not in repr(verifier)


def test_an_understood_crit_extension_passes(keys: Keys) -> None:
    v = make_verifier(keys, "EdDSA", critical={"urn:o2o:tenant"})
    ext = {"crit": ["urn:o2o:tenant"], "urn:o2o:tenant": "m-1"}
    full = v.verify_complete(mint(keys["EdDSA"], hdr=header(keys["EdDSA"], **ext)), now=NOW)
    assert full.header["urn:o2o:tenant"] == "m-1"
    bads: list[dict[str, Any]] = [
        {"crit": ["urn:o2o:tenant"]},
        {"crit": []},
        {"crit": "urn:o2o:tenant"},
        {"crit": ["urn:o2o:tenant", "urn:o2o:tenant"], "urn:o2o:tenant": 1},
    ]
    for bad in bads:
        token = mint(keys["EdDSA"], hdr=header(keys["EdDSA"], **bad))
        assert rejected(v, token).code == "bad_header"


def test_header_decisions_are_cached_safely_and_boundedly(keys: Keys) -> None:
    v = make_verifier(keys, "EdDSA")
    token = mint(keys["EdDSA"])
    v.verify_complete(token, now=NOW).header["alg"] = "none"  # the caller's copy only
    assert v.verify_complete(token, now=NOW).header["alg"] == "EdDSA"
    # The same (cached) header never vouches for another signature.
    assert rejected(v, with_signature(token, bytes(64))).code == "bad_signature"
    # Many spellings of one valid header: all judged, the cache stays bounded.
    for spaces in range(200):
        hdr = b'{"alg":"EdDSA",' + b" " * spaces + b'"typ":"at+jwt","kid":"ed-1"}'
        assert v.verify(mint(keys["EdDSA"], claims(), hdr), now=NOW)
    assert 0 < len(v._headers) <= 64


# -- construction -------------------------------------------------------------------------


def _jwk(keys: Keys, name: str, **changes: Any) -> dict[str, Any]:
    jwk = dict(keys[name].public_jwk)
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not DROP}


_PEM_SECRET = (
    b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
)


BAD_JWKS: list[tuple[str, Callable[[Keys], Any], str]] = [
    ("no-alg", lambda k: {"keys": [_jwk(k, "RS256", alg=DROP)]}, "declares no alg"),
    ("alg-none", lambda k: {"keys": [_jwk(k, "RS256", alg="none")]}, "alg is not one of"),
    ("alg-ps256", lambda k: {"keys": [_jwk(k, "RS256", alg="PS256")]}, "alg is not one of"),
    ("short-hmac", lambda k: {"keys": [_jwk(k, "HS256", k=b64(bytes(31)))]}, "at least 256"),
    ("kty-mismatch", lambda k: {"keys": [_jwk(k, "ES256", alg="RS256")]}, "kty must be RSA"),
    ("crv-mismatch", lambda k: {"keys": [_jwk(k, "ES256", crv="P-384")]}, "crv must be P-256"),
    ("private-d", lambda k: {"keys": [_jwk(k, "ES256", d=b64(bytes(32)))]}, "public key only"),
    ("no-kid", lambda k: {"keys": [_jwk(k, "ES256", kid=DROP)]}, "has no kid"),
    ("empty-kid", lambda k: {"keys": [_jwk(k, "ES256", kid="")]}, "has no kid"),
    ("dup-kid", lambda k: {"keys": [_jwk(k, "ES256"), _jwk(k, "EdDSA", kid="es-1")]}, "share"),
    ("empty", lambda k: {"keys": []}, "non-empty"),
    ("not-jwks", lambda k: [_jwk(k, "ES256")], "non-empty"),
    ("not-object", lambda k: {"keys": ["es-1"]}, "not a JSON object"),
    ("use-enc", lambda k: {"keys": [_jwk(k, "ES256", use="enc")]}, '"use"'),
    ("key-ops", lambda k: {"keys": [_jwk(k, "ES256", key_ops=["sign"])]}, '"key_ops"'),
    ("bad-b64", lambda k: {"keys": [_jwk(k, "ES256", x="a+b/")]}, "base64url"),
    ("off-curve", lambda k: {"keys": [_jwk(k, "ES256", y=b64(bytes(31) + b"\1"))]}, "invalid"),
    ("ed-short", lambda k: {"keys": [_jwk(k, "EdDSA", x=b64(bytes(31)))]}, "32 bytes"),
    ("rsa-even-e", lambda k: {"keys": [_jwk(k, "RS256", e=b64(b"\1\0"))]}, "exponent"),
    ("rsa-1024", lambda k: {"keys": [_jwk(k, "RS256", n=b64(b"\xc1" + bytes(127)))]}, "2048"),
    ("rsa-no-n", lambda k: {"keys": [_jwk(k, "RS256", n=DROP)]}, "'n' is missing"),
    ("ec-short-x", lambda k: {"keys": [_jwk(k, "ES256", x=b64(bytes(31)))]}, "32 bytes each"),
    ("hmac-pem-secret", lambda k: {"keys": [_jwk(k, "HS256", k=b64(_PEM_SECRET))]}, "asymmetric"),
]


@pytest.mark.parametrize(
    ("build", "fragment"), [c[1:] for c in BAD_JWKS], ids=[c[0] for c in BAD_JWKS]
)
def test_unusable_jwks_are_refused_at_construction(
    keys: Keys, build: Callable[[Keys], Any], fragment: str
) -> None:
    with pytest.raises(KeyManagementError, match=fragment) as info:
        TokenVerifier(build(keys), issuer=ISSUER, audience=AUDIENCE)
    secret = keys["HS256"].public_jwk["k"]
    assert secret not in info.value.diagnostics()


@pytest.mark.parametrize(
    "options",
    [
        {"issuer": ""},
        {"audience": None},
        {"leeway": -1},
        {"leeway": True},
        {"leeway": float("nan")},
        {"max_lifetime": 0},
        {"max_token_bytes": 10},
        {"typ": ""},
        {"critical": {"jku"}},
        {"critical": "urn:x"},
        {"required_claims": "sub"},
        {"dpop_max_age": "300"},
    ],
)
def test_bad_options_are_config_errors(keys: Keys, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_verifier(keys, **options)


def test_from_settings_takes_the_auth_section(keys: Keys) -> None:
    settings = AuthSettings(issuer=ISSUER, audience=AUDIENCE, max_lifetime_s=600)
    v = TokenVerifier.from_settings(settings, jwks(keys["EdDSA"]), deny_list=MemoryDenyList())
    assert v.verify(mint(keys["EdDSA"]), now=NOW)
    long = mint(keys["EdDSA"], claims(iat=NOW, exp=NOW + 601))
    assert rejected(v, long).code == "lifetime_too_long"
    short = TokenVerifier.from_settings(
        AuthSettings(issuer=ISSUER, audience=AUDIENCE, max_token_bytes=512),
        jwks(keys["EdDSA"]),
        required_claims=("sub",),
    )
    assert rejected(short, mint(keys["EdDSA"], claims(pad="x" * 400))).code == "too_large"


def test_the_default_required_claims_follow_rfc_9068() -> None:
    assert set(DEFAULT_REQUIRED_CLAIMS) == {"sub", "client_id", "iat", "jti"}


# -- the error ----------------------------------------------------------------------------


def test_token_rejected_is_a_token_error_with_the_oauth_error(
    verifier: TokenVerifier, keys: Keys
) -> None:
    exc = rejected(verifier, mint(keys["EdDSA"], claims(iss="https://evil.test")))
    assert isinstance(exc, TokenError) and isinstance(exc, RiskGuardError)
    assert (exc.code, exc.oauth_error, exc.status_code) == ("bad_issuer", "invalid_token", 401)
    assert exc.www_authenticate(realm="orders") == (
        'Bearer realm="orders", error="invalid_token", '
        'error_description="the token was not issued by the expected issuer"'
    )
    assert exc.diagnostics().startswith("error[bad_issuer]: ")


def test_dpop_errors_challenge_with_the_dpop_scheme() -> None:
    assert (
        TokenRejected("dpop_required", "x")
        .www_authenticate()
        .startswith('DPoP error="invalid_token"')
    )
    bad = TokenRejected("bad_dpop", 'a "quoted" \\ é').www_authenticate()
    assert bad == (
        'DPoP error="invalid_dpop_proof", error_description="a ?quoted? ? ?", '
        'algs="ES256 EdDSA RS256"'
    )


def test_an_unknown_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown token error code"):
        TokenRejected("expried", "typo")


# -- deny-list and replay cache -------------------------------------------------------------


def test_memory_deny_list_revokes_and_prunes() -> None:
    deny = MemoryDenyList()
    assert isinstance(deny, DenyList)
    deny.revoke("a", expires_at=100.0, now=0.0)
    deny.revoke("b", expires_at=200.0, now=0.0)
    deny.revoke("c")
    deny.revoke("a", expires_at=300.0, now=0.0)  # re-revoked for longer: survives the prune
    deny.revoke("a", expires_at=150.0, now=0.0)  # …and a shorter re-revocation never shortens
    assert all(deny.is_revoked(j) for j in "abc") and not deny.is_revoked("d")
    assert deny.prune(now=250.0) == 1
    assert (deny.is_revoked("a"), deny.is_revoked("b"), deny.is_revoked("c")) == (True, False, True)
    assert deny.prune(now=1e12) == 1 and len(deny) == 1
    with pytest.raises(ValueError):
        deny.revoke("")


def test_a_failing_deny_list_fails_closed(keys: Keys) -> None:
    class Down:
        def is_revoked(self, jti: str) -> bool:
            raise StorageError("redis is unreachable", engine="redis")

    v = make_verifier(keys, "EdDSA", deny_list=Down())
    with pytest.raises(StorageError):
        v.verify(mint(keys["EdDSA"]), now=NOW)


def test_the_deny_list_is_asked_only_after_the_signature_holds(keys: Keys) -> None:
    asked: list[str] = []

    class Spy:
        def is_revoked(self, jti: str) -> bool:
            asked.append(jti)
            return False

    v = make_verifier(keys, "EdDSA", deny_list=Spy())
    body = claims()
    v.verify(mint(keys["EdDSA"], body), now=NOW)
    with pytest.raises(TokenRejected):
        v.verify(with_signature(mint(keys["EdDSA"]), bytes(64)), now=NOW)
    assert asked == [body["jti"]]


def test_memory_replay_cache_forgets_expired_ids() -> None:
    cache = MemoryReplayCache()
    assert isinstance(cache, ReplayCache)
    assert cache.add("x", expires_at=10, now=0) is True
    assert cache.add("x", expires_at=10, now=5) is False
    assert cache.add("y", expires_at=20, now=5) is True
    assert cache.add("x", expires_at=30, now=10) is True  # x expired at 10
    assert len(cache) == 2


# -- DPoP ---------------------------------------------------------------------------------


def _bound_token(keys: Keys, holder: str = "holder") -> str:
    return mint(keys["EdDSA"], claims(cnf={"jkt": thumbprint(keys[holder])}))


@pytest.mark.parametrize("holder", ["holder", "holder-ed"])
def test_a_dpop_bound_token_passes_with_a_valid_proof_once(keys: Keys, holder: str) -> None:
    v = make_verifier(keys)
    token = _bound_token(keys, holder)
    proof = dpop_proof(keys[holder], token)
    assert v.verify(token, now=NOW, dpop=proof, method="POST", url=URL)["cnf"]
    exc = rejected(v, token, dpop=proof, method="POST", url=URL)
    assert (exc.code, "replayed" in exc.message) == ("bad_dpop", True)


@pytest.mark.parametrize(
    ("proof_url", "request_url"),
    [
        (URL, "https://api.o2o.test/orders?page=2#top"),
        (URL, "HTTPS://API.O2O.TEST:443/orders"),
        ("http://api.o2o.test:80/orders", "http://api.o2o.test/orders"),
        ("https://[::1]:8443/orders?x=1", "https://[::1]:8443/orders"),
        ("https://api.o2o.test", "https://api.o2o.test/"),
    ],
)
def test_htu_ignores_query_fragment_case_and_default_port(
    keys: Keys, proof_url: str, request_url: str
) -> None:
    token = _bound_token(keys)
    proof = dpop_proof(keys["holder"], token, url=proof_url)
    assert make_verifier(keys).verify(token, now=NOW, dpop=proof, method="POST", url=request_url)


def _holder_jwk(keys: Keys, **changes: Any) -> dict[str, Any]:
    jwk = {k: v for k, v in keys["holder"].public_jwk.items() if k not in ("kid", "alg")}
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not DROP}


def _hdr(keys: Keys, **changes: Any) -> dict[str, Any]:
    """A DPoP proof header for the holder key, changed."""
    hdr: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _holder_jwk(keys)}
    hdr.update(changes)
    return {k: v for k, v in hdr.items() if v is not DROP}


ProofBuild = Callable[[Keys, str], str]
H = "holder"
DPOP_CASES: list[tuple[str, ProofBuild, str]] = [
    ("typ-jwt", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, typ="JWT")), "not dpop+jwt"),
    ("typ-missing", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, typ=DROP)), "not dpop+jwt"),
    ("alg-hs256", lambda k, t: dpop_proof(k["HS256"], t, hdr=_hdr(k, alg="HS256")), "alg is"),
    ("alg-none", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, alg="none")), "alg is not"),
    ("extra-header", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, kid=H)), "other than typ"),
    ("no-jwk", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, jwk=DROP)), "no jwk"),
    ("jwk-not-object", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, jwk="x")), "no jwk"),
    ("private-jwk", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, jwk=_holder_jwk(k, d="AAAA"))),
     "public key only"),
    ("kty-vs-alg", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, alg="EdDSA")), "kty must be"),
    ("other-key", lambda k, t: dpop_proof(k["stranger"], t), "cnf.jkt"),
    ("forged-signature", lambda k, t: dpop_proof(k[H], t, signer=k["stranger"]), "not verify"),
    ("htm", lambda k, t: dpop_proof(k[H], t, method="GET"), "htm is not"),
    ("htu-path", lambda k, t: dpop_proof(k[H], t, url="https://api.o2o.test/refunds"), "htu"),
    ("htu-host", lambda k, t: dpop_proof(k[H], t, url="https://evil.test/orders"), "htu is"),
    ("htu-scheme", lambda k, t: dpop_proof(k[H], t, url="http://api.o2o.test/orders"), "htu"),
    ("htu-type", lambda k, t: dpop_proof(k[H], t, htu=[URL]), "htu is not"),
    ("iat-old", lambda k, t: dpop_proof(k[H], t, now=NOW - 300 - LEEWAY - 1), "too old"),
    ("iat-future", lambda k, t: dpop_proof(k[H], t, now=NOW + LEEWAY + 1), "in the future"),
    ("iat-string", lambda k, t: dpop_proof(k[H], t, iat=str(NOW)), "iat must be"),
    ("no-jti", lambda k, t: dpop_proof(k[H], t, jti=DROP), "no jti"),
    ("empty-jti", lambda k, t: dpop_proof(k[H], t, jti=""), "jti must be"),
    ("no-ath", lambda k, t: dpop_proof(k[H], t, ath=DROP), "no ath"),
    ("ath-other-token", lambda k, t: dpop_proof(k[H], "x" + t), "ath is not"),
    ("no-htm", lambda k, t: dpop_proof(k[H], t, htm=DROP), "no htm"),
    ("dup-claims", lambda k, t: _dup_jti_proof(k, t), "duplicate member"),
    ("jwk-oct", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, jwk={"kty": "oct", "k": "AAAA"})),
     "RSA, EC or OKP"),
    ("jwk-no-y", lambda k, t: dpop_proof(k[H], t, hdr=_hdr(k, jwk=_holder_jwk(k, y=DROP))),
     "'y' is missing"),
    ("htu-bad-port", lambda k, t: dpop_proof(k[H], t, url="https://api.o2o.test:99999/orders"),
     "htu is not"),
    ("htu-other-port", lambda k, t: dpop_proof(k[H], t, url="https://api.o2o.test:8443/orders"),
     "htu is not"),
    ("malformed", lambda k, t: dpop_proof(k[H], t) + ".", "three unpadded"),
    ("too-large", lambda k, t: dpop_proof(k[H], t, pad="x" * 9000), "longer than"),
]  # fmt: skip


def _dup_jti_proof(keys: Keys, token: str) -> str:
    proof = dpop_proof(keys[H], token)
    body = proof.split(".")[1]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return mint(keys[H], raw[:-1] + b',"jti":"again"}', _hdr(keys))


@pytest.mark.parametrize(
    ("build", "fragment"), [c[1:] for c in DPOP_CASES], ids=[c[0] for c in DPOP_CASES]
)
def test_each_dpop_check_refuses(keys: Keys, build: ProofBuild, fragment: str) -> None:
    token = _bound_token(keys)
    exc = rejected(make_verifier(keys), token, dpop=build(keys, token), method="POST", url=URL)
    assert exc.code == "bad_dpop"
    assert fragment in exc.message


@pytest.mark.parametrize("cnf", ["x", {"x5t#S256": "abc"}, {"jkt": 1}, {"jkt": ""}])
def test_cnf_must_name_a_dpop_key(verifier: TokenVerifier, keys: Keys, cnf: Any) -> None:
    token = mint(keys["EdDSA"], claims(cnf=cnf))
    assert rejected(verifier, token).code == "bad_claim_type"


def test_dpop_needs_the_request_method_and_absolute_url(keys: Keys) -> None:
    token = _bound_token(keys)
    proof = dpop_proof(keys["holder"], token)
    with pytest.raises(TypeError, match="method= and url="):
        make_verifier(keys).verify(token, now=NOW, dpop=proof)
    with pytest.raises(ValueError, match="absolute"):
        make_verifier(keys).verify(token, now=NOW, dpop=proof, method="POST", url="/orders")


def test_a_proof_sent_with_an_unbound_token_is_not_needed(
    verifier: TokenVerifier, keys: Keys
) -> None:
    # Which scheme the request used (Bearer or DPoP) is the adapter's call; an unbound
    # token stays a bearer token whatever header came along.
    token = mint(keys["EdDSA"])
    assert verifier.verify(token, now=NOW, dpop="garbage", method="GET", url=URL)


def test_jwk_thumbprint_matches_rfc_7638() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQ"
        "R0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTW"
        "hAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


_PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- strict JSON ----------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{}', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='k"\\[{', max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


def _true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_true_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_true_depth, value.values()), default=0)
    return 0


@_PROPERTY
@given(value=_JSON)
def test_the_depth_scan_ignores_brackets_inside_strings(value: Any) -> None:
    text = json.dumps({"v": value})
    assert _depth(text) == 1 + _true_depth(value)
    if _true_depth(value) + 1 <= MAX_DEPTH:
        assert loads_object(text.encode()) == {"v": value}
    else:
        with pytest.raises(StrictJSONError, match="nested deeper"):
            loads_object(text.encode())


def test_escaped_quote_floods_cost_linear_time(verifier: TokenVerifier, keys: Keys) -> None:
    # A header of 2000 escaped quotes and 20 brackets: a regex-based string skipper goes
    # quadratic on it (~0.05 s per token); the scanner stays linear, before any signature.
    flood = b'{"alg":"EdDSA","x":"' + b'\\"' * 2000 + b"[" * 20
    token = mint(keys["EdDSA"], claims(), flood)
    start = time.perf_counter()
    for _ in range(100):
        assert rejected(verifier, token).code == "bad_json"
    assert time.perf_counter() - start < 2.0


# -- properties ---------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + "-_.=+/ \n"


@_PROPERTY
@given(data=st.data())
def test_any_single_character_change_is_refused(
    verifier: TokenVerifier, keys: Keys, data: st.DataObject
) -> None:
    alg = data.draw(st.sampled_from(ALGS))
    token = mint(keys[alg])
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.sampled_from(_ALPHABET).filter(lambda ch: ch != token[i]))
    with pytest.raises(TokenRejected):
        verifier.verify(token[:i] + c + token[i + 1 :], now=NOW)


@_PROPERTY
@given(
    junk=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.lists(st.text(_ALPHABET, max_size=80), min_size=1, max_size=6).map(".".join),
    )
)
def test_arbitrary_input_only_ever_raises_token_rejected(
    verifier: TokenVerifier, junk: str | bytes
) -> None:
    with pytest.raises(TokenRejected):
        verifier.verify(junk, now=NOW)
