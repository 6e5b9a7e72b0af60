"""An OAuth server stack and the apps that mount it, for the OAuth tests.

Test keys and secrets only, made per test. The consent step is a tiny route standing in
for the application's page: it validates the request and approves for the user named in
``X-Test-User`` (or denies with ``?deny=1``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from riskguard.audit import AuditEvent, AuditLog, MemoryStore, SearchFilter
from riskguard.auth import (
    AuthorizationError,
    KeySet,
    MemoryAuthorizationCodeStore,
    MemoryClientRegistry,
    MemoryDenyList,
    MemoryRefreshTokenStore,
    OAuthClient,
    OAuthServer,
    TokenService,
)
from riskguard.integrations.fastapi import mount_oauth, oauth_request, send

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
TOKEN_URL = f"{ISSUER}/oauth/token"
AUTHORIZE_URL = f"{ISSUER}/oauth/authorize"
INTROSPECT_URL = f"{ISSUER}/oauth/introspect"
REVOKE_URL = f"{ISSUER}/oauth/revoke"
RIDER_CB = "https://rider.o2o.test/cb"
PARTNER_CB = "https://partner.example/oauth/callback"
COST = 2**14  # scrypt's floor: real hashing, quicker tests


@dataclass
class Stack:
    """The server, its parts, and the test clients' secrets."""

    server: OAuthServer
    service: TokenService
    clients: MemoryClientRegistry
    log: AuditLog
    secrets: dict[str, str] = field(default_factory=dict)

    def events(self, action: str) -> list[AuditEvent]:
        return self.log.search(SearchFilter(action=action), newest_first=False)


def make_stack(**server_options: Any) -> Stack:
    log = AuditLog(MemoryStore())
    service = TokenService(
        KeySet.generate("EdDSA"),
        issuer=ISSUER,
        audience=AUDIENCE,
        refresh_store=MemoryRefreshTokenStore(),
        deny_list=MemoryDenyList(),
        audit=log,
    )
    sec = {name: secrets.token_urlsafe(24) for name in ("pos-1", "pos-post", "partner", "rs")}
    clients = MemoryClientRegistry(
        [
            OAuthClient.create(
                "pos-1",
                secret=sec["pos-1"],
                grant_types=["client_credentials"],
                scope="orders:read orders:write",
                tenant="m-42",
                roles=["merchant_system"],
                name="Merchant 42 POS",
                secret_cost=COST,
            ),
            OAuthClient.create(
                "pos-post",
                secret=sec["pos-post"],
                grant_types=["client_credentials"],
                token_endpoint_auth_method="client_secret_post",
                scope="orders:read",
                tenant="m-7",
                secret_cost=COST,
            ),
            OAuthClient.create(
                "rider-app",
                token_endpoint_auth_method="none",
                redirect_uris=[RIDER_CB],
                grant_types=["authorization_code", "refresh_token"],
                scope="orders:read profile",
                name="Rider app",
            ),
            OAuthClient.create(
                "partner",
                secret=sec["partner"],
                redirect_uris=[PARTNER_CB, RIDER_CB + "2"],
                grant_types=["authorization_code", "refresh_token"],
                scope="orders:read profile",
                name="Partner",
                secret_cost=COST,
            ),
            OAuthClient.create(
                "rs",
                secret=sec["rs"],
                grant_types=["client_credentials"],
                scope="introspect",
                can_introspect=True,
                secret_cost=COST,
            ),
        ]
    )
    server = OAuthServer(
        service,
        clients=clients,
        codes=MemoryAuthorizationCodeStore(),
        audit=log,
        **server_options,
    )
    return Stack(server, service, clients, log, sec)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def fastapi_app(stack: Stack) -> FastAPI:
    app = FastAPI()
    mount_oauth(app, stack.server)

    @app.get("/oauth/authorize")
    async def authorize(request: Request) -> Response:
        try:
            pending = stack.server.authorization_request(await oauth_request(request))
        except AuthorizationError as exc:
            return send(exc.response())
        if request.query_params.get("deny") == "1":
            return send(stack.server.deny(pending))
        user = request.headers.get("x-test-user", "u-1001")
        return send(stack.server.approve(pending, subject=user, roles=["customer"]))

    return app


def flask_app(stack: Stack) -> Any:
    from flask import Flask
    from flask import request as flask_request

    from riskguard.integrations import flask as rg_flask

    app = Flask(__name__)
    app.register_blueprint(rg_flask.oauth_blueprint(stack.server))

    @app.get("/oauth/authorize")
    def authorize() -> Any:
        try:
            pending = stack.server.authorization_request(rg_flask.oauth_request())
        except AuthorizationError as exc:
            return rg_flask.send(exc.response())
        user = flask_request.headers.get("X-Test-User", "u-1001")
        return rg_flask.send(stack.server.approve(pending, subject=user))

    return app
