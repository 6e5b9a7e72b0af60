"""OAuthServer: framework-agnostic OAuth 2.0 endpoints on a :class:`TokenService`.

::

    server = OAuthServer(service, clients=SqlClientRegistry(engine),
                         codes=SqlAuthorizationCodeStore(engine), audit=audit_log)
    response = server.token(OAuthRequest("POST", url, headers, body, client_ip))

Endpoints: token (RFC 6749 §3.2: ``client_credentials``, ``authorization_code`` with PKCE
S256, ``refresh_token``), the authorization endpoint helper
(:meth:`OAuthServer.authorization_request`, :meth:`~OAuthServer.approve`,
:meth:`~OAuthServer.deny`), introspection (RFC 7662), revocation (RFC 7009), metadata
(RFC 8414) and JWKS. Adapters for FastAPI and Flask live in :mod:`riskguard.integrations`.

**Why the grants are written here, not on Authlib's ``AuthorizationServer``.** Authlib's
grant classes fit a server that owns token generation: they call ``save_token`` with a
token they generated through a token generator, and query the application's client,
code and token *models* through hooks. riskguard's :class:`TokenService` already mints
RFC 9068 tokens, and rotates refresh tokens with reuse detection as one atomic store
operation; routing that through Authlib's ``RefreshTokenGrant`` (which authenticates,
then separately revokes the old token and saves the new one) would split the
compare-and-set that makes reuse detection safe under concurrency, and its code grant
offers ``plain`` PKCE unless every server remembers to restrict it. The grant logic
proper (three grants, PKCE, code binding) is about 200 lines, so the endpoints are
written by hand against the RFCs, and tested end to end with Authlib's *client* as an
independent implementation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from loguru import logger

from riskguard.auth._authorize import (
    AuthorizationError,
    AuthorizationRequest,
    parse_authorization_request,
    redirect,
)
from riskguard.auth._claims import check_extra_claims, check_identifier, normalise_roles
from riskguard.auth._clients import GRANT_TYPES, ClientRegistry, OAuthClient
from riskguard.auth._codes import AuthorizationCode, AuthorizationCodeStore, hash_code
from riskguard.auth._grants import authorization_code, client_credentials, refresh_token
from riskguard.auth._introspect import Introspector
from riskguard.auth._oauth_http import (
    OAuthError,
    OAuthRequest,
    OAuthResponse,
    _basic_credentials,
    authenticate_client,
    invalid_request,
    json_response,
    parse_form,
)
from riskguard.auth._revocation import AuthEvents, actor_for
from riskguard.auth._service import TokenService
from riskguard.auth._throttle import LoginGuard, LoginThrottled
from riskguard.context import SubjectType
from riskguard.errors import ConfigError, StorageError
from riskguard.types import AuditRecorder, ResourceRef

__all__ = ["METADATA_PATH", "OAuthServer"]

#: Where RFC 8414 metadata is served (for an issuer without a path component).
METADATA_PATH = "/.well-known/oauth-authorization-server"
_log = logger.bind(component="auth")


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


class OAuthServer:
    """The OAuth 2.0 authorization server's endpoints, independent of any web framework.

    :param service: issues, refreshes and revokes the tokens.
    :param clients: the client registry.
    :param codes: where authorization codes wait for redemption.
    :param prefix: the path the endpoints are mounted under (``/oauth/token``…).
    :param base_url: the public origin the endpoint URLs in the metadata start with;
        the service's issuer by default.
    :param code_ttl: authorization-code lifetime in seconds (10 … 600, RFC 6749 §4.1.2).
    :param client_guard: throttles failed client authentications per client id and IP
        (client secrets can be weak); refused requests get 429 with ``Retry-After``.
    :param audit: where ``auth.code_issue``, ``auth.code_reuse`` and
        ``auth.client_auth`` events go.
    :raises ConfigError: an option is out of range.
    """

    def __init__(
        self,
        service: TokenService,
        *,
        clients: ClientRegistry,
        codes: AuthorizationCodeStore,
        prefix: str = "/oauth",
        base_url: str | None = None,
        code_ttl: float = 60,
        client_guard: LoginGuard | None = None,
        audit: AuditRecorder | None = None,
    ) -> None:
        if not isinstance(code_ttl, int | float) or not 10 <= code_ttl <= 600:
            raise ConfigError("code_ttl must be 10 to 600 seconds", key="code_ttl")
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigError("prefix must start with '/' and not end with it", key="prefix")
        self.service = service
        self.clients = clients
        self.codes = codes
        self.prefix = prefix
        self.base_url = (base_url or service.issuer).rstrip("/")
        self._code_ttl = float(code_ttl)
        self._guard = client_guard
        self._events = AuthEvents(audit)
        self._introspector = Introspector(service)

    # -- plumbing -------------------------------------------------------------------------

    def _guarded(self, fn: Any, request: OAuthRequest, now: float | None) -> OAuthResponse:
        try:
            return fn(request, _now(now))  # type: ignore[no-any-return]
        except OAuthError as exc:
            return exc.response()
        except StorageError as exc:
            _log.warning("oauth endpoint: store failed: {}", exc.message)
            return OAuthError("temporarily_unavailable", "a store is unavailable; retry later",
                              status=503, headers={"Retry-After": "5"}).response()  # fmt: skip
        except Exception as exc:  # never a stack trace to the client
            _log.error("oauth endpoint failed: {}", type(exc).__name__)
            return OAuthError("server_error", "the server failed to handle the request",
                              status=500).response()  # fmt: skip

    def _client(self, request: OAuthRequest, params: dict[str, str], now: float) -> OAuthClient:
        claimed = params.get("client_id")
        if self._guard is not None:
            claimed = claimed or _basic_id(request)
            try:
                self._guard.check(f"client:{claimed}" if claimed else None,
                                  request.client_ip, now=now)  # fmt: skip
            except LoginThrottled as exc:
                retry = {"Retry-After": str(exc.retry_after)}
                raise OAuthError("invalid_client", exc.message, status=429, headers=retry) from None
        try:
            auth = authenticate_client(request, params, self.clients)
        except OAuthError as exc:
            if exc.error == "invalid_client":
                self._events.record(
                    "auth.client_auth", "failure", actor=None, reason=exc.description,
                    resource=ResourceRef("oauth_client", (claimed or "")[:255] or None),
                    details={},
                )  # fmt: skip
                if self._guard is not None and claimed:
                    self._guard.record_failure(f"client:{claimed}", request.client_ip, now=now)
            raise
        return auth.client

    # -- token endpoint -------------------------------------------------------------------

    def token(self, request: OAuthRequest, *, now: float | None = None) -> OAuthResponse:
        """The token endpoint (RFC 6749 §3.2); always a JSON response, ``no-store``."""
        return self._guarded(self._token, request, now)

    def _token(self, request: OAuthRequest, now: float) -> OAuthResponse:
        params = parse_form(request)
        grant_type = params.get("grant_type")
        client = self._client(request, params, now)
        if grant_type is None:
            raise invalid_request("grant_type is missing")
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type[:64]!r} is not "
                             "supported")  # fmt: skip
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
        if grant_type == "client_credentials":
            grant = client_credentials(self.service, client, params, now)
        elif grant_type == "authorization_code":
            grant = authorization_code(self.service, self.codes, self._events, client, params,
                                       now)  # fmt: skip
        else:
            grant = refresh_token(self.service, client, params, now)
        return json_response(200, grant.to_response())

    # -- authorization endpoint -----------------------------------------------------------

    def authorization_request(
        self, request: OAuthRequest, *, now: float | None = None
    ) -> AuthorizationRequest:
        """Validate an authorization request; what the consent page needs.

        :raises AuthorizationError: render :meth:`AuthorizationError.response` (a
            redirect with ``error=`` when the client and redirect URI are valid, else a
            400 page).
        """
        return parse_authorization_request(request, self.clients, self.service.issuer)

    def approve(
        self,
        pending: AuthorizationRequest,
        *,
        subject: str,
        scope: str | Iterable[str] | None = None,
        tenant: str | None = None,
        roles: Iterable[str] = (),
        subject_type: SubjectType = "user",
        claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> OAuthResponse:
        """The user consented: issue a code and redirect to the client with it.

        :param subject: the authenticated user's opaque id.
        :param scope: the scope the user granted, within ``pending.scopes`` (all by
            default).
        :param tenant: the merchant or tenant domain the tokens act in (the client's by
            default).
        :param claims: extra access-token claims (``auth_time``, ``acr``…).
        :raises ValueError: the scope exceeds the request, or an argument is malformed.
        :raises AuthorizationError: the client's registration changed since validation.
        :raises StorageError: the code store failed.
        """
        t = _now(now)
        client = self.clients.get(pending.client_id)
        if client is None or pending.redirect_uri not in client.redirect_uris:
            raise AuthorizationError("invalid_request", "the client's registration changed")
        check_identifier("subject", subject, sensitive=True)
        granted = pending.scopes if scope is None else tuple(
            scope.split() if isinstance(scope, str) else scope)  # fmt: skip
        if not set(granted) <= set(pending.scopes) or not set(granted) <= client.scopes:
            raise ValueError("the approved scope exceeds the requested scope")
        tenant = client.tenant if tenant is None else check_identifier("tenant", tenant)
        role_list = normalise_roles(roles)
        extra = check_extra_claims(claims)
        code = secrets.token_urlsafe(32)
        self.codes.create(
            AuthorizationCode(
                code_hash=hash_code(code), client_id=client.client_id,
                redirect_uri=pending.redirect_uri if pending.redirect_uri_given else None,
                code_challenge=pending.code_challenge, subject=subject,
                scope=" ".join(dict.fromkeys(granted)), issued_at=t,
                expires_at=t + self._code_ttl, subject_type=subject_type, tenant=tenant,
                roles=role_list, claims=extra,
            )
        )  # fmt: skip
        self._events.record(
            "auth.code_issue", "success",
            actor=actor_for(subject, subject_type, tenant, role_list),
            resource=ResourceRef("oauth_client", client.client_id, tenant),
            details={"client_id": client.client_id, "scope": " ".join(granted)},
        )  # fmt: skip
        params = {"code": code}
        if pending.state is not None:
            params["state"] = pending.state
        params["iss"] = self.service.issuer
        return redirect(pending.redirect_uri, params)

    def deny(
        self, pending: AuthorizationRequest, *, description: str = "the user denied the request"
    ) -> OAuthResponse:
        """The user declined: redirect with ``error=access_denied``."""
        return AuthorizationError(
            "access_denied", description, redirect_uri=pending.redirect_uri,
            state=pending.state, issuer=self.service.issuer,
        ).response()  # fmt: skip

    # -- introspection and revocation -----------------------------------------------------

    def introspect(self, request: OAuthRequest, *, now: float | None = None) -> OAuthResponse:
        """RFC 7662 introspection for an authenticated client."""
        return self._guarded(self._introspect, request, now)

    def _introspect(self, request: OAuthRequest, now: float) -> OAuthResponse:
        params = parse_form(request)
        client = self._client(request, params, now)
        if client.public:
            raise OAuthError("invalid_client", "introspection needs a confidential client",
                             status=401)  # fmt: skip
        token = params.get("token")
        if token is None:
            raise invalid_request("token is missing")
        body = self._introspector.introspect(client, token, params.get("token_type_hint"), now)
        return json_response(200, body)

    def revoke(self, request: OAuthRequest, *, now: float | None = None) -> OAuthResponse:
        """RFC 7009 revocation for an authenticated client; 200 for unknown tokens."""
        return self._guarded(self._revoke, request, now)

    def _revoke(self, request: OAuthRequest, now: float) -> OAuthResponse:
        params = parse_form(request)
        client = self._client(request, params, now)
        token = params.get("token")
        if token is None:
            raise invalid_request("token is missing")
        self._introspector.revoke(client, token, params.get("token_type_hint"), now)
        return json_response(200, {})

    # -- discovery ------------------------------------------------------------------------

    def metadata_document(self) -> dict[str, Any]:
        """The RFC 8414 authorization server metadata."""
        base = self.base_url + self.prefix
        auth_methods = ["client_secret_basic", "client_secret_post", "none"]
        return {
            "issuer": self.service.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": list(GRANT_TYPES),
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods[:2],
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }

    def metadata(self) -> OAuthResponse:
        """The metadata as a response (cacheable)."""
        return json_response(200, self.metadata_document(), cache=True,
                             headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip

    def jwks(self, *, now: float | None = None) -> OAuthResponse:
        """The public JWKS (current, next and still-valid previous keys)."""
        body = self.service.jwks(now=now)
        return json_response(200, body, cache=True,
                             headers={"Cache-Control": "public, max-age=300"})  # fmt: skip

    def __repr__(self) -> str:
        return f"OAuthServer(issuer={self.service.issuer!r}, prefix={self.prefix!r})"


def _basic_id(request: OAuthRequest) -> str | None:
    header = request.header("authorization")
    if header is None:
        return None
    try:
        return _basic_credentials(header)[0]
    except OAuthError:
        return None
