"""The token endpoint's grants: ``client_credentials``, ``authorization_code`` (PKCE S256
only) and ``refresh_token``, written on top of :class:`~riskguard.auth.TokenService`.

Each function takes the authenticated client and the form parameters and returns the
:class:`~riskguard.auth.TokenGrant`, or raises :class:`OAuthError` with the RFC 6749
§5.2 error. Token minting, refresh rotation and family revocation are the service's.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from riskguard.auth._clients import OAuthClient
from riskguard.auth._codes import AuthorizationCode, AuthorizationCodeStore, hash_code
from riskguard.auth._dpop import access_token_hash
from riskguard.auth._errors import GrantRejected
from riskguard.auth._oauth_http import OAuthError, invalid_request
from riskguard.auth._revocation import AuthEvents, actor_for
from riskguard.auth._service import TokenGrant, TokenService
from riskguard.types import ResourceRef

__all__ = ["authorization_code", "client_credentials", "refresh_token", "requested_scope"]

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_MAX_CODE = 512


def _grant_error(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def requested_scope(params: dict[str, str], client: OAuthClient) -> str:
    """The ``scope`` parameter checked against the client's registration (the client's
    whole registered scope when omitted).

    :raises OAuthError: ``invalid_scope``.
    """
    raw = params.get("scope")
    if raw is None:
        return client.scope
    wanted = raw.split(" ")
    if any(not s for s in wanted) or not set(wanted) <= client.scopes:
        raise OAuthError("invalid_scope", "the requested scope is not allowed for this client")
    return " ".join(dict.fromkeys(wanted))


def client_credentials(
    service: TokenService, client: OAuthClient, params: dict[str, str], now: float
) -> TokenGrant:
    """RFC 6749 §4.4: a token for the client itself (a merchant's POS or ERP), acting in
    the client's tenant; no refresh token (§4.4.3).

    :raises OAuthError: ``unauthorized_client`` (public client), ``invalid_scope``.
    """
    if client.public:
        raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
    scope = requested_scope(params, client)
    return service.issue(
        subject=client.client_id, client_id=client.client_id, scope=scope,
        tenant=client.tenant, roles=client.roles, subject_type="service", now=now,
    )  # fmt: skip


def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6 S256: ``BASE64URL(SHA256(verifier)) == challenge``, constant-time."""
    # The same computation as DPoP's ath: base64url(SHA-256(ASCII)).
    return hmac.compare_digest(access_token_hash(verifier), challenge)


def _revoke_issued(
    service: TokenService, rec: AuthorizationCode, events: AuthEvents, now: float
) -> None:
    # RFC 6749 §4.1.2: a code presented twice has leaked; revoke what it produced.
    if rec.family_id is not None:
        service.revoke_family(rec.family_id, now=now, reason="code_reuse")
    if rec.access_jti is not None and rec.access_exp is not None:
        service.revoke_access_token(rec.access_jti, expires_at=rec.access_exp,
                                    client_id=rec.client_id, now=now)  # fmt: skip
    events.record(
        "auth.code_reuse", "failure",
        actor=actor_for(rec.subject, rec.subject_type, rec.tenant, rec.roles),
        resource=ResourceRef("authorization_code", None, rec.tenant),
        reason="an authorization code was presented again: its tokens are revoked",
        details={"client_id": rec.client_id, "jti": rec.access_jti, "family": rec.family_id},
    )  # fmt: skip


def authorization_code(
    service: TokenService,
    codes: AuthorizationCodeStore,
    events: AuthEvents,
    client: OAuthClient,
    params: dict[str, str],
    now: float,
) -> TokenGrant:
    """RFC 6749 §4.1.3 with RFC 7636 §4.5: redeem a code once.

    The code is consumed before the redirect URI and verifier are compared, so a stolen
    code gets one try. A code presented again revokes the tokens issued from it.

    :raises OAuthError: ``invalid_request`` (missing or malformed parameter) or
        ``invalid_grant`` (unknown, expired, reused, another client's code, wrong
        redirect URI, wrong verifier).
    """
    code = params.get("code")
    if code is None:
        raise invalid_request("code is missing")
    verifier = params.get("code_verifier")
    if verifier is None:
        raise invalid_request("code_verifier is missing (PKCE is required)")
    if not _VERIFIER.fullmatch(verifier):
        raise invalid_request("code_verifier must be 43-128 unreserved characters (RFC 7636)")
    if len(code) > _MAX_CODE:
        raise _grant_error("the authorization code is not valid")
    code_hash = hash_code(code)
    result = codes.consume(code_hash, now=now)
    rec = result.record
    if result.status == "unknown" or rec is None:
        raise _grant_error("the authorization code is not valid")
    if rec.client_id != client.client_id:
        # Another client holds this code: it leaked. Burned by consume(); revoke too.
        if result.status == "reused":
            _revoke_issued(service, rec, events, now)
        raise _grant_error("the authorization code was issued to another client")
    if result.status == "reused":
        _revoke_issued(service, rec, events, now)
        raise _grant_error("the authorization code was already used; its tokens are revoked")
    if result.status == "expired":
        raise _grant_error("the authorization code has expired")
    uri = params.get("redirect_uri")
    if rec.redirect_uri is not None and uri != rec.redirect_uri:
        raise _grant_error("redirect_uri does not match the authorization request")
    if rec.redirect_uri is None and uri is not None and uri not in client.redirect_uris:
        raise _grant_error("redirect_uri does not match the authorization request")
    if not pkce_matches(verifier, rec.code_challenge):
        raise _grant_error("code_verifier does not match the code_challenge")
    grant = service.issue(
        subject=rec.subject, client_id=rec.client_id, scope=rec.scope, tenant=rec.tenant,
        roles=rec.roles, subject_type=_subject_type(rec.subject_type),
        extra_claims=rec.claims or None,
        refresh="refresh_token" in client.grant_types, now=now,
    )  # fmt: skip
    ok = codes.attach(
        code_hash,
        access_jti=grant.access.jti,
        access_exp=float(grant.access.expires_at),
        family_id=grant.family_id,
    )
    if not ok:  # presented again while we issued: revoke what we just issued
        issued = AuthorizationCode(
            code_hash=code_hash, client_id=rec.client_id, redirect_uri=rec.redirect_uri,
            code_challenge=rec.code_challenge, subject=rec.subject, scope=rec.scope,
            issued_at=rec.issued_at, expires_at=rec.expires_at, subject_type=rec.subject_type,
            tenant=rec.tenant, roles=rec.roles, access_jti=grant.access.jti,
            access_exp=float(grant.access.expires_at), family_id=grant.family_id,
        )  # fmt: skip
        _revoke_issued(service, issued, events, now)
        raise _grant_error("the authorization code was already used; its tokens are revoked")
    return grant


def _subject_type(value: str) -> Any:
    return value if value in ("user", "service", "staff") else "user"


def refresh_token(
    service: TokenService, client: OAuthClient, params: dict[str, str], now: float
) -> TokenGrant:
    """RFC 6749 §6: rotate the refresh token (reuse revokes the family: the service).

    :raises OAuthError: ``invalid_request`` (no token), ``invalid_grant``,
        ``invalid_scope``.
    """
    token = params.get("refresh_token")
    if token is None:
        raise invalid_request("refresh_token is missing")
    scope = params.get("scope")
    try:
        return service.refresh(token, client_id=client.client_id, scope=scope, now=now)
    except GrantRejected as exc:
        raise OAuthError(exc.oauth_error, exc.message) from None
