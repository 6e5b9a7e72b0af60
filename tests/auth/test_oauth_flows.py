"""OAuth 2.0 flows end to end over HTTP, with Authlib's client against the FastAPI mount
(and the same flows once through the Flask mount with Flask's test client).

Authlib's client is an independent implementation of the client side: it builds the PKCE
challenge, the Basic header, parses the redirect and the token responses itself.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from riskguard.auth import TokenRejected
from tests.auth._oauth_app import (
    AUTHORIZE_URL,
    INTROSPECT_URL,
    ISSUER,
    PARTNER_CB,
    REVOKE_URL,
    RIDER_CB,
    TOKEN_URL,
    Stack,
    fastapi_app,
    flask_app,
    make_stack,
    pkce_pair,
)

with warnings.catch_warnings():
    # Authlib announces its move to the httpx2 package on import; httpx is what we have.
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.common.security import generate_token
    from authlib.integrations.base_client.errors import OAuthError as ClientOAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client


@pytest.fixture
def stack() -> Stack:
    return make_stack()


def run(stack: Stack, flow: Callable[[Any, httpx.ASGITransport], Awaitable[None]]) -> None:
    app = fastapi_app(stack)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        await flow(app, transport)

    asyncio.run(main())


def _client(transport: httpx.ASGITransport, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(transport=transport, base_url=ISSUER, **kwargs)


async def _authorize(transport: httpx.ASGITransport, url: str, user: str = "u-1001") -> str:
    """Follow the user's browser to the consent route; the redirect's Location."""
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as browser:
        response = await browser.get(url, headers={"X-Test-User": user})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def _verify(stack: Stack, token: str) -> dict[str, Any]:
    return stack.service.verifier().verify(token)


# -- client credentials ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials(stack: Stack, method: str) -> None:
    client_id = "pos-1" if method == "client_secret_basic" else "pos-post"

    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id=client_id,
            client_secret=stack.secrets[client_id],
            token_endpoint_auth_method=method,
        ) as c:
            token = await c.fetch_token(
                TOKEN_URL, grant_type="client_credentials", scope="orders:read"
            )
        assert token["token_type"] == "Bearer"
        assert "refresh_token" not in token  # RFC 6749 §4.4.3
        claims = _verify(stack, token["access_token"])
        assert claims["sub"] == client_id and claims["client_id"] == client_id
        assert claims["scope"] == "orders:read"
        assert claims["tenant"] == ("m-42" if client_id == "pos-1" else "m-7")

    run(stack, flow)


def test_client_credentials_default_scope_and_merchant_roles(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(transport, client_id="pos-1", client_secret=stack.secrets["pos-1"]) as c:
            token = await c.fetch_token(TOKEN_URL, grant_type="client_credentials")
        claims = _verify(stack, token["access_token"])
        assert claims["scope"] == "orders:read orders:write"
        assert claims["roles"] == ["merchant_system"]

    run(stack, flow)
    [event] = stack.events("auth.token_issue")
    assert event.actor is not None and event.actor["type"] == "service"


# -- authorization code + PKCE ---------------------------------------------------------------


async def _code_flow(
    stack: Stack, transport: httpx.ASGITransport, c: AsyncOAuth2Client, user: str = "u-1001"
) -> dict[str, Any]:
    verifier = generate_token(64)
    url, state = c.create_authorization_url(AUTHORIZE_URL, code_verifier=verifier)
    assert "code_challenge_method=S256" in url
    location = await _authorize(transport, url, user)
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state] and query["iss"] == [ISSUER]
    token: dict[str, Any] = await c.fetch_token(
        TOKEN_URL, authorization_response=location, code_verifier=verifier, state=state
    )
    return token


def test_authorization_code_pkce_public_client(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id="rider-app",
            token_endpoint_auth_method="none",
            redirect_uri=RIDER_CB,
            scope="orders:read",
            code_challenge_method="S256",
        ) as c:
            token = await _code_flow(stack, transport, c)
        claims = _verify(stack, token["access_token"])
        assert (claims["sub"], claims["client_id"]) == ("u-1001", "rider-app")
        assert claims["scope"] == "orders:read" and claims["roles"] == ["customer"]
        assert token["refresh_token"]

    run(stack, flow)
    assert [e.outcome for e in stack.events("auth.code_issue")] == ["success"]


def test_authorization_code_pkce_confidential_client(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id="partner",
            client_secret=stack.secrets["partner"],
            redirect_uri=PARTNER_CB,
            scope="profile",
            code_challenge_method="S256",
        ) as c:
            token = await _code_flow(stack, transport, c, user="u-2002")
        claims = _verify(stack, token["access_token"])
        assert (claims["sub"], claims["scope"]) == ("u-2002", "profile")

    run(stack, flow)


def test_user_denies_consent(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport, client_id="rider-app", redirect_uri=RIDER_CB, code_challenge_method="S256"
        ) as c:
            url, state = c.create_authorization_url(AUTHORIZE_URL, code_verifier=generate_token(64))
        location = await _authorize(transport, url + "&deny=1")
        assert location.startswith(RIDER_CB + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["error"] == ["access_denied"] and query["state"] == [state]
        assert "code" not in query

    run(stack, flow)


# -- refresh rotation and reuse detection ------------------------------------------------------


def test_refresh_rotation_then_reuse_revokes_family(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id="rider-app",
            token_endpoint_auth_method="none",
            redirect_uri=RIDER_CB,
            code_challenge_method="S256",
        ) as c:
            first = await _code_flow(stack, transport, c)
            second = await c.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
            assert second["refresh_token"] != first["refresh_token"]
            assert second["access_token"] != first["access_token"]
            live = _verify(stack, second["access_token"])
            assert live["sub"] == "u-1001"

            # The old refresh token comes back (stolen copy): the whole family dies.
            with pytest.raises(ClientOAuthError) as info:
                await c.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
            assert info.value.error == "invalid_grant"
            with pytest.raises(ClientOAuthError) as info:
                await c.refresh_token(TOKEN_URL, refresh_token=second["refresh_token"])
            assert info.value.error == "invalid_grant"

        with pytest.raises(TokenRejected) as rejected:
            _verify(stack, second["access_token"])
        assert rejected.value.code == "revoked"
        async with _client(transport, client_id="rs", client_secret=stack.secrets["rs"]) as rs:
            answer = await rs.introspect_token(INTROSPECT_URL, token=second["access_token"])
            assert answer.status_code == 200 and answer.json() == {"active": False}
            answer = await rs.introspect_token(INTROSPECT_URL, token=second["refresh_token"])
            assert answer.json() == {"active": False}

    run(stack, flow)
    assert [e.outcome for e in stack.events("auth.refresh_reuse")] == ["failure"]


# -- introspection and revocation ---------------------------------------------------------------


def test_introspection_of_access_and_refresh_tokens(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id="rider-app",
            token_endpoint_auth_method="none",
            redirect_uri=RIDER_CB,
            code_challenge_method="S256",
        ) as c:
            token = await _code_flow(stack, transport, c)
        async with _client(transport, client_id="rs", client_secret=stack.secrets["rs"]) as rs:
            access = (await rs.introspect_token(INTROSPECT_URL, token=token["access_token"])).json()
            refresh = (
                await rs.introspect_token(
                    INTROSPECT_URL, token=token["refresh_token"], token_type_hint="refresh_token"
                )
            ).json()
            bogus = await rs.introspect_token(INTROSPECT_URL, token="not-a-token")
        assert access["active"] is True and access["sub"] == "u-1001"
        assert access["client_id"] == "rider-app" and access["scope"] == "orders:read profile"
        assert access["iss"] == ISSUER and access["token_type"] == "Bearer"
        assert refresh["active"] is True and refresh["client_id"] == "rider-app"
        assert bogus.json() == {"active": False}
        assert bogus.headers["cache-control"] == "no-store"

    run(stack, flow)


def test_introspection_hides_other_clients_tokens(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(transport, client_id="pos-1", client_secret=stack.secrets["pos-1"]) as c:
            token = await c.fetch_token(TOKEN_URL, grant_type="client_credentials")
            own = await c.introspect_token(INTROSPECT_URL, token=token["access_token"])
        async with _client(
            transport,
            client_id="pos-post",
            client_secret=stack.secrets["pos-post"],
            token_endpoint_auth_method="client_secret_post",
        ) as other:
            other.revocation_endpoint_auth_method = "client_secret_post"
            theirs = await other.introspect_token(INTROSPECT_URL, token=token["access_token"])
        assert own.json()["active"] is True
        assert theirs.json() == {"active": False}

    run(stack, flow)


def test_revoking_a_refresh_token_revokes_its_family(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(
            transport,
            client_id="rider-app",
            token_endpoint_auth_method="none",
            redirect_uri=RIDER_CB,
            code_challenge_method="S256",
        ) as c:
            token = await _code_flow(stack, transport, c)
            response = await c.revoke_token(
                REVOKE_URL, token=token["refresh_token"], token_type_hint="refresh_token"
            )
            assert response.status_code == 200
            with pytest.raises(ClientOAuthError) as info:
                await c.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
            assert info.value.error == "invalid_grant"
            unknown = await c.revoke_token(REVOKE_URL, token="never-issued")
            assert unknown.status_code == 200  # RFC 7009 §2.2
        with pytest.raises(TokenRejected):
            _verify(stack, token["access_token"])

    run(stack, flow)


def test_revoking_an_access_token(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with _client(transport, client_id="pos-1", client_secret=stack.secrets["pos-1"]) as c:
            token = await c.fetch_token(TOKEN_URL, grant_type="client_credentials")
            assert _verify(stack, token["access_token"])["sub"] == "pos-1"
            response = await c.revoke_token(
                REVOKE_URL, token=token["access_token"], token_type_hint="access_token"
            )
            assert response.status_code == 200
            answer = await c.introspect_token(INTROSPECT_URL, token=token["access_token"])
            assert answer.json() == {"active": False}
        with pytest.raises(TokenRejected) as rejected:
            _verify(stack, token["access_token"])
        assert rejected.value.code == "revoked"

    run(stack, flow)


# -- discovery -----------------------------------------------------------------------------------


def test_metadata_and_jwks(stack: Stack) -> None:
    async def flow(app: Any, transport: httpx.ASGITransport) -> None:
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            meta = (await http.get("/.well-known/oauth-authorization-server")).json()
            jwks = (await http.get("/oauth/jwks")).json()
        assert meta["issuer"] == ISSUER and meta["token_endpoint"] == TOKEN_URL
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["jwks_uri"] == f"{ISSUER}/oauth/jwks"
        kids = {k["kid"] for k in jwks["keys"]}
        assert stack.service.keys.current.kid in kids
        assert all("d" not in k for k in jwks["keys"])  # public keys only

    run(stack, flow)


# -- the Flask mount ------------------------------------------------------------------------------


def test_flask_mount_flows(stack: Stack) -> None:
    client = flask_app(stack).test_client()
    base = {"base_url": ISSUER}
    cc = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("pos-1", stack.secrets["pos-1"]),
        **base,
    )
    assert cc.status_code == 200 and cc.headers["Cache-Control"] == "no-store"
    assert _verify(stack, cc.json["access_token"])["tenant"] == "m-42"

    verifier, challenge = pkce_pair()
    redirect = client.get(
        "/oauth/authorize",
        query_string={
            "response_type": "code",
            "client_id": "rider-app",
            "redirect_uri": RIDER_CB,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s-1",
        },
        **base,
    )
    assert redirect.status_code == 302
    query = parse_qs(urlsplit(redirect.headers["Location"]).query)
    assert query["state"] == ["s-1"]
    token = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "client_id": "rider-app",
            "redirect_uri": RIDER_CB,
            "code_verifier": verifier,
        },
        **base,
    )
    assert token.status_code == 200, token.json
    first = token.json

    rotated = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "rider-app",
        },
        **base,
    )
    assert rotated.status_code == 200
    reuse = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "rider-app",
        },
        **base,
    )
    assert (reuse.status_code, reuse.json["error"]) == (400, "invalid_grant")

    introspected = client.post(
        "/oauth/introspect",
        data={"token": rotated.json["access_token"]},
        auth=("rs", stack.secrets["rs"]),
        **base,
    )
    assert introspected.json == {"active": False}  # revoked with its family
    revoked = client.post(
        "/oauth/revoke",
        data={"token": cc.json["access_token"]},
        auth=("pos-1", stack.secrets["pos-1"]),
        **base,
    )
    assert revoked.status_code == 200
    with pytest.raises(TokenRejected):
        _verify(stack, cc.json["access_token"])
    meta = client.get("/.well-known/oauth-authorization-server", **base)
    assert meta.json["revocation_endpoint"] == REVOKE_URL
