"""Token introspection (RFC 7662) and revocation (RFC 7009) on a :class:`TokenService`.

Both take the authenticated client. Introspection answers ``{"active": false}`` for
anything not valid *for this caller*: malformed, unknown, expired, revoked tokens, and
tokens of another client unless the caller may introspect for resource servers
(``can_introspect``), so that a client cannot probe other clients' tokens (RFC 7662 §4).
Revocation answers 200 for unknown and invalid tokens (RFC 7009 §2.2).
"""

from __future__ import annotations

from typing import Any

from riskguard.auth._clients import OAuthClient
from riskguard.auth._errors import GrantRejected, TokenRejected
from riskguard.auth._oauth_http import OAuthError
from riskguard.auth._service import TokenService
from riskguard.auth._verifier import TokenVerifier
from riskguard.errors import ConfigError

__all__ = ["Introspector"]

_HINTS = ("access_token", "refresh_token")
_MAX_TOKEN = 8192


class Introspector:
    """Looks tokens up for RFC 7662 and RFC 7009, with a verifier kept per key set."""

    def __init__(self, service: TokenService) -> None:
        self._service = service
        self._verifier: tuple[tuple[str, ...], TokenVerifier] | None = None

    def _verify(self, token: str, now: float) -> dict[str, Any] | None:
        jwks = self._service.keys.verification_jwks(now=now)
        kids = tuple(k["kid"] for k in jwks["keys"])
        if self._verifier is None or self._verifier[0] != kids:
            self._verifier = (kids, self._service.verifier(now=now))
        try:
            return self._verifier[1].verify(token, now=now)
        except TokenRejected:
            return None

    def _order(self, hint: str | None, token: str) -> tuple[str, ...]:
        if hint == "refresh_token":
            return ("refresh_token", "access_token")
        if hint == "access_token" or token.count(".") == 2:
            return ("access_token", "refresh_token")
        return ("refresh_token", "access_token")

    def _has_refresh(self) -> bool:
        try:
            self._service.refresh_token_record("")
        except ConfigError:  # no refresh store configured
            return False
        return True

    def introspect(
        self, caller: OAuthClient, token: str, hint: str | None, now: float
    ) -> dict[str, Any]:
        """The RFC 7662 §2.2 response for ``token``."""
        if len(token) > _MAX_TOKEN:
            return {"active": False}
        for kind in self._order(hint, token):
            if kind == "access_token":
                claims = self._verify(token, now)
                if claims is None:
                    continue
                if claims.get("client_id") != caller.client_id and not caller.can_introspect:
                    return {"active": False}
                out = {"active": True, "token_type": "Bearer"}
                for name in ("scope", "client_id", "sub", "exp", "iat", "nbf", "iss", "aud",
                             "jti", "tenant", "roles"):  # fmt: skip
                    if name in claims:
                        out[name] = claims[name]
                return out
            if not self._has_refresh():
                continue
            rec = self._service.refresh_token_record(token)
            if rec is None:
                continue
            live = rec.used_at is None and rec.revoked_at is None and rec.expires_at > now
            if not live or (rec.client_id != caller.client_id and not caller.can_introspect):
                return {"active": False}
            out = {"active": True, "client_id": rec.client_id, "sub": rec.subject,
                   "exp": int(rec.expires_at), "iat": int(rec.issued_at),
                   "iss": self._service.issuer, "aud": rec.audience}  # fmt: skip
            if rec.scope:
                out["scope"] = rec.scope
            if rec.tenant is not None:
                out["tenant"] = rec.tenant
            return out
        return {"active": False}

    def revoke(self, caller: OAuthClient, token: str, hint: str | None, now: float) -> None:
        """RFC 7009 §2.1: revoke ``token`` (a refresh token's whole family, or an access
        token until it expires); nothing for unknown or invalid tokens.

        :raises OAuthError: ``unauthorized_client`` when the token is another client's.
        """
        if len(token) > _MAX_TOKEN:
            return
        if hint is not None and hint not in _HINTS:
            hint = None  # RFC 7009 §2.1: an unknown hint is ignored; the server searches
        for kind in self._order(hint, token):
            if kind == "access_token":
                claims = self._verify(token, now)
                if claims is None:
                    continue
                if claims.get("client_id") != caller.client_id:
                    raise _not_yours()
                self._service.revoke_access_token(
                    claims["jti"], expires_at=float(claims["exp"]), client_id=caller.client_id,
                    now=now,
                )  # fmt: skip
                return
            if not self._has_refresh():
                continue
            try:
                if self._service.revoke_refresh_token(token, client_id=caller.client_id, now=now):
                    return
            except GrantRejected:
                raise _not_yours() from None


def _not_yours() -> OAuthError:
    return OAuthError("unauthorized_client", "the token was not issued to this client")
