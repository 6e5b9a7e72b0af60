"""Access tokens as issued: signing the JWS and the token response.

An access token is a JWS with header ``{"alg", "typ": "at+jwt", "kid"}`` (RFC 9068 §2.1,
RFC 8725 §3.11: explicit typing; ``kid`` always, so verifiers pick the key without
guessing) and the claims ``iss sub aud exp iat jti client_id``, then ``scope``, ``tenant``
(the merchant or tenant domain), ``roles`` and ``cnf.jkt`` (RFC 9449 §6) when they apply.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from riskguard.auth._codec import b64url_encode
from riskguard.auth._keys import IssuerKey

__all__ = ["AccessToken", "TokenGrant", "mint_access_token"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An issued access token. ``token`` is the compact JWS (kept out of ``repr``)."""

    token: str = field(repr=False)
    jti: str
    kid: str
    issued_at: int
    expires_at: int
    scope: str
    token_type: Literal["Bearer", "DPoP"]

    @property
    def expires_in(self) -> int:
        """Lifetime in seconds (``expires_in`` of the token response)."""
        return self.expires_at - self.issued_at


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a grant returns: the access token and, for refreshable grants, the new
    refresh token and its family id. Tokens are kept out of ``repr``."""

    access: AccessToken
    refresh_token: str | None = field(default=None, repr=False)
    family_id: str | None = None

    def to_response(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 token response body."""
        body: dict[str, Any] = {
            "access_token": self.access.token,
            "token_type": self.access.token_type,
            "expires_in": self.access.expires_in,
        }
        if self.access.scope:
            body["scope"] = self.access.scope
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


def _segment(obj: Mapping[str, Any]) -> str:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return b64url_encode(data.encode("utf-8"))


def mint_access_token(
    key: IssuerKey,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    audience: str,
    scope: str,
    tenant: str | None,
    roles: tuple[str, ...],
    jkt: str | None,
    extra: Mapping[str, Any],
    now: float,
    ttl: int,
) -> AccessToken:
    """Sign an access token with ``key``; the arguments are already checked.

    ``iat`` is ``now`` rounded down and ``exp`` is ``iat + ttl``: whole seconds, so that
    ``exp - iat`` is exactly the lifetime a verifier's ``max_lifetime`` compares with.
    """
    iat = int(now)
    exp = iat + ttl
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": exp,
        "iat": iat,
        "jti": jti,
        "client_id": client_id,
    }
    if scope:
        claims["scope"] = scope
    if tenant is not None:
        claims["tenant"] = tenant
    if roles:
        claims["roles"] = list(roles)
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    claims.update(extra)
    header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    token = f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"
    token_type: Literal["Bearer", "DPoP"] = "DPoP" if jkt is not None else "Bearer"
    return AccessToken(token, jti, key.kid, iat, exp, scope, token_type)
