"""Authentication: strict JWT access-token verification (RFC 8725, RFC 9068, RFC 9449).

::

    from riskguard.auth import MemoryDenyList, TokenRejected, TokenVerifier

    verifier = TokenVerifier(jwks, issuer="https://id.example", audience="orders-api",
                             deny_list=MemoryDenyList())
    try:
        claims = verifier.verify(token)
    except TokenRejected as exc:
        status, challenge = exc.status_code, exc.www_authenticate()

Every rejection is a :class:`TokenRejected` (a :class:`riskguard.errors.TokenError`) with a
stable ``code`` from :data:`CODES` and ``oauth_error == "invalid_token"``.

Public names: the verifier (:class:`TokenVerifier`, :class:`VerifiedToken`,
:data:`DEFAULT_REQUIRED_CLAIMS`, :data:`SUPPORTED_ALGORITHMS`), the error
(:class:`TokenRejected`, :data:`CODES`), the plug points with their in-memory doubles
(:class:`DenyList`/:class:`MemoryDenyList`, :class:`ReplayCache`/:class:`MemoryReplayCache`)
and DPoP helpers for issuers and clients (:func:`jwk_thumbprint` for ``cnf.jkt``,
:func:`access_token_hash` for ``ath``).
"""

from __future__ import annotations

from riskguard.auth._denylist import DenyList, MemoryDenyList
from riskguard.auth._dpop import access_token_hash
from riskguard.auth._errors import CODES, TokenRejected
from riskguard.auth._jwks import SUPPORTED_ALGORITHMS, jwk_thumbprint
from riskguard.auth._replay import MemoryReplayCache, ReplayCache
from riskguard.auth._verifier import DEFAULT_REQUIRED_CLAIMS, TokenVerifier, VerifiedToken

__all__ = [
    "CODES",
    "DEFAULT_REQUIRED_CLAIMS",
    "SUPPORTED_ALGORITHMS",
    "DenyList",
    "MemoryDenyList",
    "MemoryReplayCache",
    "ReplayCache",
    "TokenRejected",
    "TokenVerifier",
    "VerifiedToken",
    "access_token_hash",
    "jwk_thumbprint",
]
