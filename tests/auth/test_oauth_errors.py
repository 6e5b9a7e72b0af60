"""Every malformed OAuth request class gets its RFC error code and HTTP status, over HTTP
against the FastAPI mount; no response carries a stack trace or a secret."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from riskguard.auth import (
    LoginGuard,
    MemoryCounterStore,
    OAuthClient,
    OAuthRequest,
    ThrottlePolicy,
    TokenRejected,
    check_client_secret,
    hash_client_secret,
)
from riskguard.errors import StorageError
from tests.auth._http import call
from tests.auth._oauth_app import (
    ISSUER,
    PARTNER_CB,
    RIDER_CB,
    Stack,
    fastapi_app,
    make_stack,
    pkce_pair,
)


@pytest.fixture
def stack() -> Stack:
    return make_stack()


@pytest.fixture
def app(stack: Stack) -> Any:
    return fastapi_app(stack)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def token(app: Any, data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    return call(app, "POST", "/oauth/token", data=data, headers=headers or {})


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert "Traceback" not in response.text
    return body


def pos(stack: Stack) -> dict[str, str]:
    return basic("pos-1", stack.secrets["pos-1"])


def code_for(
    stack: Stack,
    client_id: str = "rider-app",
    redirect_uri: str = RIDER_CB,
    now: float | None = None,
) -> tuple[str, str]:
    """Run the authorization step through the core; (code, verifier)."""
    verifier, challenge = pkce_pair()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "xyz",
        }
    )
    pending = stack.server.authorization_request(
        OAuthRequest("GET", f"{ISSUER}/oauth/authorize?{query}")
    )
    response = stack.server.approve(pending, subject="u-1001", now=now)
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    return code, verifier


def redeem(code: str, verifier: str, **extra: str) -> dict[str, str]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "rider-app",
        "redirect_uri": RIDER_CB,
        "code_verifier": verifier,
    }
    data.update(extra)
    return {k: v for k, v in data.items() if v != "-"}


# -- request shape ---------------------------------------------------------------------------


def test_missing_grant_type(app: Any, stack: Stack) -> None:
    body = assert_error(token(app, {"scope": "orders:read"}, pos(stack)), 400, "invalid_request")
    assert "grant_type" in body["error_description"]


def test_unknown_grant_type(app: Any, stack: Stack) -> None:
    response = token(app, {"grant_type": "password", "username": "a", "password": "b"}, pos(stack))
    assert_error(response, 400, "unsupported_grant_type")


def test_repeated_parameter(app: Any, stack: Stack) -> None:
    response = call(
        app,
        "POST",
        "/oauth/token",
        headers={**pos(stack), "Content-Type": "application/x-www-form-urlencoded"},
        content=b"grant_type=client_credentials&grant_type=client_credentials",
    )
    assert "repeated" in assert_error(response, 400, "invalid_request")["error_description"]


def test_json_body_is_refused(app: Any, stack: Stack) -> None:
    response = call(
        app, "POST", "/oauth/token", json={"grant_type": "client_credentials"}, headers=pos(stack)
    )
    assert_error(response, 400, "invalid_request")


def test_get_on_token_endpoint_is_not_allowed(stack: Stack) -> None:
    response = stack.server.token(OAuthRequest("GET", f"{ISSUER}/oauth/token"))
    assert response.status == 405 and response.headers["Allow"] == "POST"
    assert response.json()["error"] == "invalid_request"


# -- client authentication -------------------------------------------------------------------


def test_bad_client_secret(app: Any, stack: Stack) -> None:
    response = token(app, {"grant_type": "client_credentials"}, basic("pos-1", "wrong-secret"))
    assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")
    [event] = stack.events("auth.client_auth")
    assert event.outcome == "failure" and "wrong-secret" not in event.details_json


def test_unknown_client(app: Any) -> None:
    response = token(app, {"grant_type": "client_credentials"}, basic("nobody", "whatever-123"))
    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "header",
    [
        "Basic not*base64!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer abc",
        "Basic ",
        "Basic " + base64.b64encode(b":secret-only").decode(),
    ],
    ids=["not-base64", "no-colon", "other-scheme", "empty", "empty-id"],
)
def test_basic_auth_malformed(app: Any, header: str) -> None:
    response = token(app, {"grant_type": "client_credentials"}, {"Authorization": header})
    assert_error(response, 401, "invalid_client")
    assert "Basic" in response.headers["www-authenticate"]


def test_no_client_authentication(app: Any) -> None:
    assert_error(token(app, {"grant_type": "client_credentials"}), 401, "invalid_client")


def test_two_authentication_methods(app: Any, stack: Stack) -> None:
    data = {
        "grant_type": "client_credentials",
        "client_id": "pos-1",
        "client_secret": stack.secrets["pos-1"],
    }
    assert_error(token(app, data, pos(stack)), 400, "invalid_request")


def test_client_uses_another_auth_method_than_registered(app: Any, stack: Stack) -> None:
    data = {
        "grant_type": "client_credentials",
        "client_id": "pos-1",
        "client_secret": stack.secrets["pos-1"],
    }
    body = assert_error(token(app, data), 401, "invalid_client")
    assert "client_secret_basic" in body["error_description"]


def test_confidential_client_without_secret(app: Any) -> None:
    data = {"grant_type": "client_credentials", "client_id": "pos-1"}
    assert_error(token(app, data), 401, "invalid_client")


def test_failed_client_auth_is_throttled() -> None:
    guard = LoginGuard(
        MemoryCounterStore(),
        account=ThrottlePolicy(max_failures=3, lockout=30),
        action="auth.client_auth",
    )
    stack = make_stack(client_guard=guard)
    app = fastapi_app(stack)
    for _ in range(3):
        token(app, {"grant_type": "client_credentials"}, basic("pos-1", "guess-guess"))
    response = token(app, {"grant_type": "client_credentials"}, pos(stack))  # right secret
    assert_error(response, 429, "invalid_client")
    assert 1 <= int(response.headers["retry-after"]) <= 30


# -- grants and scope ------------------------------------------------------------------------


def test_grant_not_registered_for_client(app: Any, stack: Stack) -> None:
    response = token(app, {"grant_type": "authorization_code", "code": "x"}, pos(stack))
    assert_error(response, 400, "unauthorized_client")


def test_scope_beyond_clients(app: Any, stack: Stack) -> None:
    response = token(
        app, {"grant_type": "client_credentials", "scope": "orders:read admin"}, pos(stack)
    )
    assert_error(response, 400, "invalid_scope")


def test_refresh_scope_beyond_grant(app: Any, stack: Stack) -> None:
    grant = token(app, redeem(*code_for(stack))).json()
    response = token(
        app,
        {
            "grant_type": "refresh_token",
            "client_id": "rider-app",
            "refresh_token": grant["refresh_token"],
            "scope": "admin",
        },
    )
    assert_error(response, 400, "invalid_scope")


def test_refresh_token_of_another_client(app: Any, stack: Stack) -> None:
    grant = token(app, redeem(*code_for(stack))).json()
    response = token(
        app,
        {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
        basic("partner", stack.secrets["partner"]),
    )
    assert_error(response, 400, "invalid_grant")


def test_missing_refresh_token(app: Any) -> None:
    data = {"grant_type": "refresh_token", "client_id": "rider-app"}
    assert_error(token(app, data), 400, "invalid_request")


def test_public_client_cannot_register_client_credentials() -> None:
    with pytest.raises(ValueError, match="client_credentials"):
        OAuthClient.create(
            "kiosk", token_endpoint_auth_method="none", grant_types=["client_credentials"]
        )


# -- authorization code and PKCE -------------------------------------------------------------


def test_wrong_redirect_uri_at_token_endpoint(app: Any, stack: Stack) -> None:
    code, verifier = code_for(stack)
    response = token(app, redeem(code, verifier, redirect_uri=RIDER_CB + "/"))
    assert_error(response, 400, "invalid_grant")


def test_missing_redirect_uri_at_token_endpoint(app: Any, stack: Stack) -> None:
    code, verifier = code_for(stack)
    assert_error(token(app, redeem(code, verifier, redirect_uri="-")), 400, "invalid_grant")


def test_wrong_code_verifier(app: Any, stack: Stack) -> None:
    code, _ = code_for(stack)
    other, _ = pkce_pair()
    body = assert_error(token(app, redeem(code, other)), 400, "invalid_grant")
    assert "code_verifier" in body["error_description"]


def test_missing_code_verifier(app: Any, stack: Stack) -> None:
    code, _ = code_for(stack)
    assert_error(token(app, redeem(code, "-")), 400, "invalid_request")


def test_malformed_code_verifier(app: Any, stack: Stack) -> None:
    code, _ = code_for(stack)
    assert_error(token(app, redeem(code, "short")), 400, "invalid_request")


def test_plain_pkce_verifier_equal_to_challenge_fails(app: Any, stack: Stack) -> None:
    # A client that fell back to "plain" would send the challenge itself as verifier.
    _, challenge = pkce_pair()
    code, _ = code_for(stack)
    assert_error(token(app, redeem(code, challenge)), 400, "invalid_grant")


def test_unknown_code(app: Any) -> None:
    verifier, _ = pkce_pair()
    assert_error(token(app, redeem("made-up-code", verifier)), 400, "invalid_grant")


def test_expired_code(stack: Stack) -> None:
    code, verifier = code_for(stack, now=1_750_000_000)
    body = urlencode(redeem(code, verifier)).encode()
    request = OAuthRequest(
        "POST", f"{ISSUER}/oauth/token", {"Content-Type": "application/x-www-form-urlencoded"}, body
    )
    response = stack.server.token(request, now=1_750_000_061)  # code_ttl is 60 s
    assert response.status == 400 and response.json()["error"] == "invalid_grant"
    assert "expired" in response.json()["error_description"]


def test_code_of_another_client(app: Any, stack: Stack) -> None:
    code, verifier = code_for(stack, client_id="partner", redirect_uri=PARTNER_CB)
    assert_error(token(app, redeem(code, verifier)), 400, "invalid_grant")


def test_code_reuse_revokes_tokens_issued_from_it(app: Any, stack: Stack) -> None:
    code, verifier = code_for(stack)
    first = token(app, redeem(code, verifier))
    assert first.status_code == 200
    grant = first.json()
    verifier_ = stack.service.verifier()
    assert verifier_.verify(grant["access_token"])["sub"] == "u-1001"
    body = assert_error(token(app, redeem(code, verifier)), 400, "invalid_grant")
    assert "already used" in body["error_description"]
    with pytest.raises(TokenRejected) as info:
        stack.service.verifier().verify(grant["access_token"])
    assert info.value.code == "revoked"
    refresh = token(
        app,
        {
            "grant_type": "refresh_token",
            "client_id": "rider-app",
            "refresh_token": grant["refresh_token"],
        },
    )
    assert_error(refresh, 400, "invalid_grant")
    assert [e.outcome for e in stack.events("auth.code_reuse")] == ["failure"]


# -- the authorization endpoint --------------------------------------------------------------


def authorize(app: Any, **params: str) -> httpx.Response:
    base = {
        "response_type": "code",
        "client_id": "rider-app",
        "redirect_uri": RIDER_CB,
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "state": "st",
    }
    base.update(params)
    query = {k: v for k, v in base.items() if v != "-"}
    return call(app, "GET", "/oauth/authorize", params=query)


def redirected_error(response: httpx.Response, error: str) -> None:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(RIDER_CB + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == [error] and query["state"] == ["st"] and query["iss"] == [ISSUER]
    assert "code" not in query


def page_error(response: httpx.Response) -> None:
    assert response.status_code == 400
    assert "location" not in response.headers  # never redirect to an unverified URI
    assert response.text.startswith("Authorization request refused")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        RIDER_CB + "/",
        RIDER_CB + "x",
        RIDER_CB.upper(),
        RIDER_CB + "?a=1",
        "https://evil.test/cb",
        RIDER_CB.replace("https", "http"),
    ],
    ids=["slash", "prefix", "case", "query", "foreign", "scheme"],
)
def test_redirect_uri_must_match_exactly(app: Any, redirect_uri: str) -> None:
    page_error(authorize(app, redirect_uri=redirect_uri))


def test_unknown_client_gets_a_page(app: Any) -> None:
    page_error(authorize(app, client_id="nobody"))


def test_redirect_uri_required_when_several_registered(app: Any) -> None:
    page_error(authorize(app, client_id="partner", redirect_uri="-"))


def test_public_client_without_pkce(app: Any) -> None:
    redirected_error(
        authorize(app, code_challenge="-", code_challenge_method="-"), "invalid_request"
    )


def test_pkce_plain_refused(app: Any) -> None:
    redirected_error(authorize(app, code_challenge_method="plain"), "invalid_request")


def test_pkce_method_omitted_means_plain_and_is_refused(app: Any) -> None:
    redirected_error(authorize(app, code_challenge_method="-"), "invalid_request")


def test_malformed_code_challenge(app: Any) -> None:
    redirected_error(authorize(app, code_challenge="too-short"), "invalid_request")


def test_unsupported_response_type(app: Any) -> None:
    redirected_error(authorize(app, response_type="token"), "unsupported_response_type")


def test_authorize_scope_beyond_clients(app: Any) -> None:
    redirected_error(authorize(app, scope="orders:read admin"), "invalid_scope")


def test_authorize_client_without_code_grant(app: Any) -> None:
    # pos-1 has no redirect URI at all: the page, not a redirect.
    page_error(authorize(app, client_id="pos-1"))


# -- introspection and revocation ------------------------------------------------------------


def test_introspection_needs_a_confidential_client(app: Any) -> None:
    response = call(app, "POST", "/oauth/introspect", data={"token": "x", "client_id": "rider-app"})
    assert_error(response, 401, "invalid_client")


def test_introspection_without_token(app: Any, stack: Stack) -> None:
    response = call(app, "POST", "/oauth/introspect", data={}, headers=pos(stack))
    assert_error(response, 400, "invalid_request")


def test_revoking_another_clients_token(app: Any, stack: Stack) -> None:
    access = token(app, {"grant_type": "client_credentials"}, pos(stack)).json()["access_token"]
    response = call(
        app,
        "POST",
        "/oauth/revoke",
        data={"token": access},
        headers=basic("rs", stack.secrets["rs"]),
    )
    assert_error(response, 400, "unauthorized_client")
    assert stack.service.verifier().verify(access)["sub"] == "pos-1"  # still valid


# -- failures inside the server --------------------------------------------------------------


class _BrokenRegistry:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get(self, client_id: str) -> OAuthClient | None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (StorageError("db down: postgres://admin:hunter2@db"), 503, "temporarily_unavailable"),
        (RuntimeError("secret-key-material-xyz"), 500, "server_error"),
    ],
    ids=["storage", "bug"],
)
def test_internal_failures_leak_nothing(
    stack: Stack, exc: Exception, status: int, error: str
) -> None:
    stack.server.clients = _BrokenRegistry(exc)
    response = token(fastapi_app(stack), {"grant_type": "client_credentials"}, pos(stack))
    assert_error(response, status, error)
    assert "hunter2" not in response.text and "secret-key" not in response.text


# -- client registration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("https://app.test/*", "wildcards"),
        ("http://app.test/cb", "loopback"),
        ("https://app.test/cb#frag", "fragment"),
        ("/relative", "absolute"),
        ("javascript:alert(1)", "scheme"),
    ],
)
def test_registration_refuses_unsafe_redirect_uris(uri: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OAuthClient.create("app", token_endpoint_auth_method="none", redirect_uris=[uri])


def test_secret_is_stored_as_scrypt_hash() -> None:
    client = OAuthClient.create(
        "erp-9",
        secret="correct horse battery",
        grant_types=["client_credentials"],
        secret_cost=2**14,
    )
    assert client.secret_hash is not None and client.secret_hash.startswith("scrypt$14$8$1$")
    assert "correct horse" not in client.secret_hash and "correct" not in repr(client)
    assert client.check_secret("correct horse battery")
    assert not client.check_secret("correct horse batterY")
    assert not check_client_secret("correct horse battery", None)  # unknown client
    other = hash_client_secret("correct horse battery", cost=2**14)
    assert other != client.secret_hash  # per-client salt
    with pytest.raises(ValueError):
        hash_client_secret("short")
    with pytest.raises(ValueError):
        hash_client_secret("x" * 600)
