"""Trusted keys: a JWKS parsed once into pinned, prepared verification keys.

Each JWK names the one algorithm it may verify (``alg``) and that pin is final: a token
cannot pick another algorithm for the key (RFC 8725 §3.1, §2.1), so an RSA public key can
never be used as an HMAC secret. Key objects are built and checked once, here; PyJWT's
algorithm objects then verify signatures against the prepared keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicNumbers
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError

from riskguard.auth._codec import StrictJSONError, b64url_decode, b64url_encode
from riskguard.errors import KeyManagementError

__all__ = [
    "MIN_HMAC_BYTES",
    "MIN_RSA_BITS",
    "SUPPORTED_ALGORITHMS",
    "JWKError",
    "VerifyingKey",
    "jwk_thumbprint",
    "parse_jwks",
    "pin_key",
    "public_key_from_jwk",
]

#: Algorithms a trusted key may be pinned to.
SUPPORTED_ALGORITHMS: tuple[str, ...] = ("EdDSA", "ES256", "RS256", "HS256")
MIN_HMAC_BYTES = 32  # RFC 7518 §3.2: a key of the hash's size or larger
MIN_RSA_BITS = 2048  # RFC 7518 §3.3

_KTY = {"HS256": "oct", "RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
_CRV = {"EC": "P-256", "OKP": "Ed25519"}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the members a thumbprint covers, in lexicographic order.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# PyJWT's algorithm objects hold no state; one set serves every verifier.
_ALGORITHMS: Mapping[str, Algorithm] = get_default_algorithms()


class JWKError(ValueError):
    """A JWK cannot be used. The message names the member, never its value."""


@dataclass(frozen=True, slots=True, eq=False)
class VerifyingKey:
    """One trusted key, pinned to ``alg``, with its prepared key object."""

    kid: str
    alg: str
    key: Any
    algorithm: Algorithm

    def __repr__(self) -> str:  # never print key material
        return f"VerifyingKey(kid={self.kid!r}, alg={self.alg!r})"

    def check(self, signing_input: bytes, signature: bytes) -> str | None:
        """``None`` when ``signature`` verifies over ``signing_input``, else why not."""
        if not signature:
            return "the token has no signature"
        if self.alg == "ES256":
            # JOSE ECDSA signatures are fixed-size raw r||s (RFC 7518 §3.4); DER is refused.
            if len(signature) != 64:
                return "the ES256 signature is not 64 bytes of raw r||s"
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            # r = s = 0 verified for any message in Java 15-18 (CVE-2022-21449): refuse
            # the whole out-of-range class before it reaches any ECDSA implementation.
            if not (0 < r < _P256_N and 0 < s < _P256_N):
                return "the ES256 signature has r or s outside [1, n-1]"
        try:
            ok = self.algorithm.verify(signing_input, self.key, signature)
        except (ValueError, TypeError):
            ok = False
        return None if ok else "the signature does not verify"


def pin_key(kid: str, alg: str, key: Any) -> VerifyingKey:
    """``key`` (from :func:`public_key_from_jwk`) prepared by PyJWT and pinned to ``alg``.

    :raises JWKError: PyJWT refuses the key for ``alg``.
    """
    algorithm = _ALGORITHMS[alg]
    try:
        prepared = algorithm.prepare_key(key)
    except InvalidKeyError as exc:
        raise JWKError(str(exc)) from None
    return VerifyingKey(kid=kid, alg=alg, key=prepared, algorithm=algorithm)


def _member_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise JWKError(f"member {name!r} is missing or not a string")
    try:
        return b64url_decode(value)
    except StrictJSONError:
        raise JWKError(f"member {name!r} is not unpadded base64url") from None


def public_key_from_jwk(jwk: Mapping[str, Any], alg: str) -> Any:
    """The key object for ``jwk`` used with ``alg``: ``bytes`` for ``oct``, else a
    :mod:`cryptography` public key.

    :raises JWKError: ``kty``/``crv`` does not fit ``alg``, a member is missing or
        malformed, an asymmetric JWK holds private members, or the key is too weak.
    """
    kty = jwk.get("kty")
    expected = _KTY.get(alg)
    if expected is None:
        raise JWKError(f"algorithm {alg} is not supported")
    if kty != expected:
        raise JWKError(f"kty must be {expected} for {alg}")
    if kty == "oct":
        secret = _member_bytes(jwk, "k")
        if len(secret) < MIN_HMAC_BYTES:
            raise JWKError(f"an HS256 key must be at least {MIN_HMAC_BYTES * 8} bits")
        return secret
    if _PRIVATE_MEMBERS & jwk.keys():
        raise JWKError("an asymmetric JWK here must hold the public key only")
    if kty in _CRV and jwk.get("crv") != _CRV[kty]:
        raise JWKError(f"crv must be {_CRV[kty]} for {alg}")
    try:
        if kty == "RSA":
            n = int.from_bytes(_member_bytes(jwk, "n"), "big")
            e = int.from_bytes(_member_bytes(jwk, "e"), "big")
            if n.bit_length() < MIN_RSA_BITS:
                raise JWKError(f"an RSA key must be at least {MIN_RSA_BITS} bits")
            if e < 3 or e % 2 == 0:
                raise JWKError("the RSA public exponent is invalid")
            return RSAPublicNumbers(e, n).public_key()
        if kty == "EC":
            x, y = _member_bytes(jwk, "x"), _member_bytes(jwk, "y")
            if len(x) != 32 or len(y) != 32:
                raise JWKError("P-256 coordinates must be 32 bytes each")
            numbers = EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), SECP256R1()
            )
            return numbers.public_key()
        x = _member_bytes(jwk, "x")
        if len(x) != 32:
            raise JWKError("an Ed25519 public key must be 32 bytes")
        return Ed25519PublicKey.from_public_bytes(x)
    except JWKError:
        raise
    except ValueError:  # point not on the curve, and the like
        raise JWKError(f"the {kty} public key is invalid") from None


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (``RSA``, ``EC`` or ``OKP``),
    base64url-encoded: the value of ``cnf.jkt`` for DPoP-bound tokens (RFC 9449 §6.1).

    :raises JWKError: unsupported ``kty`` or a required member missing.
    """
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise JWKError("kty must be RSA, EC or OKP")
    picked = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise JWKError(f"member {name!r} is missing or not a string")
        picked[name] = value
    canonical = json.dumps(picked, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def _verifying_key(jwk: Any, index: int) -> VerifyingKey:
    where = f"JWKS key #{index}"
    if not isinstance(jwk, Mapping):
        raise KeyManagementError(f"{where} is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise KeyManagementError(
            f"{where} has no kid", hint="give every trusted key a unique, non-empty kid"
        )
    alg = jwk.get("alg")
    if alg is None:
        raise KeyManagementError(
            "the JWK declares no alg: every trusted key must be pinned to one algorithm",
            key_id=kid,
            hint=f'add "alg": one of {", ".join(SUPPORTED_ALGORITHMS)}',
        )
    if alg not in _KTY:
        raise KeyManagementError(
            f"the JWK's alg is not one of {', '.join(SUPPORTED_ALGORITHMS)}", key_id=kid
        )
    if jwk.get("use", "sig") != "sig":
        raise KeyManagementError('the JWK\'s "use" is not "sig"', key_id=kid)
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeyManagementError('the JWK\'s "key_ops" does not allow "verify"', key_id=kid)
    try:
        return pin_key(kid, alg, public_key_from_jwk(jwk, alg))
    except JWKError as exc:
        raise KeyManagementError(f"the JWK cannot be used: {exc}", key_id=kid) from None


def parse_jwks(jwks: Mapping[str, Any]) -> dict[str, VerifyingKey]:
    """Parse and check a JWKS (``{"keys": [...]}``) into ``kid → VerifyingKey``.

    :raises KeyManagementError: not a JWKS, empty, a key without ``kid`` or ``alg``, a
        duplicate ``kid``, an unsupported or mismatched algorithm, a weak or malformed key,
        or private members in an asymmetric key.
    """
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list) or not keys:
        raise KeyManagementError(
            'the JWKS must be an object with a non-empty "keys" list',
            hint="pass the parsed JSON of a JWKS document",
        )
    parsed: dict[str, VerifyingKey] = {}
    for index, jwk in enumerate(keys):
        key = _verifying_key(jwk, index)
        if key.kid in parsed:
            raise KeyManagementError("two keys in the JWKS share one kid", key_id=key.kid)
        parsed[key.kid] = key
    return parsed
