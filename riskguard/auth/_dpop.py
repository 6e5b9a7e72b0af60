"""DPoP proofs (RFC 9449 §4.3): the only place a token may carry its own key (``jwk``).

A DPoP-bound access token names the thumbprint of its holder's key in ``cnf.jkt``; each
request carries a fresh proof JWT signed with that key, bound to the HTTP method, the URL
and the access token (``ath``). Without a proof the token is refused, never accepted as a
plain bearer token.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from riskguard.auth._codec import b64url_encode, is_numeric_date
from riskguard.auth._compact import decode_segment, parse_compact
from riskguard.auth._errors import DPOP_ALGORITHMS, TokenRejected
from riskguard.auth._jwks import JWKError, jwk_thumbprint, pin_key, public_key_from_jwk
from riskguard.auth._replay import ReplayCache

__all__ = ["access_token_hash", "check_proof", "normalise_htu"]

_HEADER_PARAMS = frozenset({"typ", "alg", "jwk"})
_TYPS = frozenset({"dpop+jwt", "application/dpop+jwt"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _bad(message: str) -> TokenRejected:
    return TokenRejected("bad_dpop", message)


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url(SHA-256(ASCII access token)) (RFC 9449 §4.2)."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def normalise_htu(url: str) -> str | None:
    """``url`` reduced to what ``htu`` is compared on (RFC 9449 §4.3 check 9): scheme and
    host lower-cased, default port dropped, no query or fragment. ``None`` if not an
    absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def check_proof(
    proof: object,
    *,
    access_token: str,
    jkt: str,
    method: str,
    url: str,
    now: float,
    leeway: float,
    max_age: float,
    max_bytes: int,
    replay: ReplayCache,
) -> None:
    """Check a DPoP proof for a request that presents ``access_token`` bound to ``jkt``.

    :raises TokenRejected: ``bad_dpop`` naming the first check that failed.
    :raises ValueError: ``url`` is not an absolute http(s) URL (a caller bug).
    """
    expected_htu = normalise_htu(url)
    if expected_htu is None:
        raise ValueError("url must be the absolute http(s) URL of the request")
    try:
        _, header_seg, signing_input, payload_seg, signature = parse_compact(proof, max_bytes)
        header = decode_segment(header_seg, "header")
    except TokenRejected as exc:
        raise _bad(f"DPoP proof: {exc.message}") from None
    if header.keys() - _HEADER_PARAMS:
        raise _bad("the DPoP proof header carries parameters other than typ, alg and jwk")
    typ = header.get("typ")
    if type(typ) is not str or typ.lower() not in _TYPS:
        raise _bad("the DPoP proof's typ is not dpop+jwt")
    alg = header.get("alg")
    if alg not in DPOP_ALGORITHMS:
        raise _bad(f"the DPoP proof's alg is not one of {', '.join(DPOP_ALGORITHMS)}")
    jwk = header.get("jwk")
    if type(jwk) is not dict:
        raise _bad("the DPoP proof carries no jwk public key")
    try:
        thumbprint = jwk_thumbprint(jwk)
        if thumbprint != jkt:
            raise _bad("the DPoP proof's key is not the key the token is bound to (cnf.jkt)")
        key = pin_key("dpop", alg, public_key_from_jwk(jwk, alg))
    except JWKError as exc:
        raise _bad(f"the DPoP proof's jwk cannot be used: {exc}") from None
    problem = key.check(signing_input, signature)
    if problem is not None:
        raise _bad(f"DPoP proof: {problem}")
    try:
        claims = decode_segment(payload_seg, "payload")
    except TokenRejected as exc:
        raise _bad(f"DPoP proof: {exc.message}") from None
    _check_claims(claims, access_token, method, expected_htu, now, leeway, max_age)
    jti = claims["jti"]
    if not replay.add(f"{thumbprint}:{jti}", expires_at=claims["iat"] + max_age + leeway, now=now):
        raise _bad("the DPoP proof was already used (replayed jti)")


def _check_claims(
    claims: dict[str, Any],
    access_token: str,
    method: str,
    expected_htu: str,
    now: float,
    leeway: float,
    max_age: float,
) -> None:
    for name in ("jti", "htm", "htu", "iat", "ath"):
        if name not in claims:
            raise _bad(f"the DPoP proof has no {name} claim")
    jti, htm, htu, iat, ath = (claims[n] for n in ("jti", "htm", "htu", "iat", "ath"))
    if type(jti) is not str or not jti or len(jti) > 256:
        raise _bad("the DPoP proof's jti must be a non-empty string")
    if htm != method:
        raise _bad("the DPoP proof's htm is not the request method")
    if type(htu) is not str or normalise_htu(htu) != expected_htu:
        raise _bad("the DPoP proof's htu is not the request URL")
    if not is_numeric_date(iat):
        raise _bad("the DPoP proof's iat must be a NumericDate")
    if iat > now + leeway:
        raise _bad("the DPoP proof was issued in the future")
    if iat < now - max_age - leeway:
        raise _bad("the DPoP proof is too old")
    if ath != access_token_hash(access_token):
        raise _bad("the DPoP proof's ath is not the hash of the access token")
