"""The exceptions a rejected token or grant raises, and the stable codes they carry."""

from __future__ import annotations

from riskguard.errors import TokenError

__all__ = [
    "CODES",
    "DPOP_ALGORITHMS",
    "DPOP_CODES",
    "GRANT_CODES",
    "GrantRejected",
    "TokenRejected",
]

#: Every ``code`` :class:`TokenRejected` can carry. Clients and tests match on these; they
#: never change meaning. The message says which check failed, never what the token held.
CODES: frozenset[str] = frozenset(
    {
        "too_large",  # over max_token_bytes, refused before any decoding
        "malformed",  # not three base64url parts (padding, alphabet, whitespace, JWE…)
        "bad_json",  # header or payload is not one strict JSON object in UTF-8
        "bad_header",  # a header parameter outside the allow-list, or of the wrong type
        "unsupported_crit",  # crit names an extension this verifier does not understand
        "bad_alg",  # none, unsupported, or not the algorithm pinned to the key
        "unknown_kid",  # kid names no trusted key (or is missing with several keys)
        "bad_typ",  # missing or unexpected typ (RFC 8725 §3.11, RFC 9068 §4)
        "bad_signature",  # signature absent, in the wrong form, or does not verify
        "missing_claim",  # a required claim is absent
        "bad_claim_type",  # a claim has the wrong JSON type or an out-of-range value
        "expired",  # exp is past (beyond leeway)
        "not_yet_valid",  # nbf is in the future (beyond leeway)
        "issued_in_future",  # iat is in the future (beyond leeway)
        "lifetime_too_long",  # exp - iat (or exp - now) exceeds max_lifetime
        "bad_issuer",  # iss is not the configured issuer
        "bad_audience",  # aud does not contain the configured audience
        "revoked",  # jti is on the deny-list
        "dpop_required",  # the token is sender-constrained (cnf) and no DPoP proof came
        "bad_dpop",  # the DPoP proof is invalid (RFC 9449 §4.3)
    }
)

#: Signature algorithms a DPoP proof may use (asymmetric only, RFC 9449 §4.3 check 5).
DPOP_ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "RS256")

#: Codes that concern a sender-constrained token: the challenge uses the DPoP scheme.
DPOP_CODES: frozenset[str] = frozenset({"dpop_required", "bad_dpop"})


class TokenRejected(TokenError):
    """A token (or its DPoP proof) was rejected.

    ``code`` is one of :data:`CODES`. ``oauth_error`` is the RFC 6750 §3.1 error,
    always ``invalid_token``, and ``status_code`` the HTTP status (401) a resource server
    answers with; :meth:`www_authenticate` renders the challenge header.
    """

    oauth_error = "invalid_token"
    status_code = 401

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        if code not in CODES:  # a typo here would silently break clients matching on codes
            raise ValueError(f"unknown token error code {code!r}")
        super().__init__(code, message, hint=hint)

    def www_authenticate(self, realm: str | None = None) -> str:
        """The ``WWW-Authenticate`` header value for this rejection.

        Bearer tokens get ``Bearer error="invalid_token"`` (RFC 6750 §3); errors about a
        DPoP-bound token get the ``DPoP`` scheme, with ``invalid_dpop_proof`` when the
        proof itself is bad (RFC 9449 §7.1).
        """
        scheme = "DPoP" if self.code in DPOP_CODES else "Bearer"
        error = "invalid_dpop_proof" if self.code == "bad_dpop" else self.oauth_error
        params = [] if realm is None else [f'realm="{_quote(realm)}"']
        params.append(f'error="{error}"')
        params.append(f'error_description="{_quote(self.message)}"')
        if scheme == "DPoP":
            params.append(f'algs="{" ".join(DPOP_ALGORITHMS)}"')
        return f"{scheme} " + ", ".join(params)


def _quote(text: str) -> str:
    # RFC 6750 §3: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


#: Every ``code`` :class:`GrantRejected` can carry, mapped to its RFC 6749 §5.2 error.
GRANT_CODES: dict[str, str] = {
    "invalid_refresh_token": "invalid_grant",  # malformed or unknown (never issued, pruned)
    "expired": "invalid_grant",  # the refresh token's expiry has passed
    "reused": "invalid_grant",  # already used: the whole family was revoked just now
    "revoked": "invalid_grant",  # its family was revoked (reuse, logout, RFC 7009)
    "client_mismatch": "invalid_grant",  # issued to another client (RFC 6749 §6)
    "dpop_mismatch": "invalid_grant",  # DPoP-bound and not presented with its key (RFC 9449 §5)
    "scope_exceeded": "invalid_scope",  # asks for scope beyond the original grant (§6)
}


class GrantRejected(TokenError):
    """A grant (today: a refresh token) was refused at the token endpoint.

    ``code`` is one of :data:`GRANT_CODES`; ``oauth_error`` is the RFC 6749 §5.2 error it
    maps to (``invalid_grant``, or ``invalid_scope``) and ``status_code`` is 400.
    :meth:`to_dict` is the JSON error body. The message never holds the token.
    """

    status_code = 400

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        if code not in GRANT_CODES:
            raise ValueError(f"unknown grant error code {code!r}")
        super().__init__(code, message, hint=hint)
        self.oauth_error = GRANT_CODES[code]

    def to_dict(self) -> dict[str, str]:
        """The RFC 6749 §5.2 error response body."""
        return {"error": self.oauth_error, "error_description": _quote(self.message)}
