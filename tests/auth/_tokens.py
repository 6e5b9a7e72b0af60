"""Test keys and a raw token minter for the auth tests (test keys only, made per run).

``mint`` builds compact JWS by hand so that tests can produce what no well-behaved library
would: duplicate JSON keys, ``NaN``, padding, DER signatures, forged headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import (
    ECAlgorithm,
    HMACAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)

from riskguard.auth import jwk_thumbprint

ISSUER = "https://id.o2o.test"
AUDIENCE = "orders-api"
LEEWAY = 30
MAX_LIFETIME = 3600
NOW = 1_750_000_000  # fixed test time: every verify() in these tests passes now=
DROP = object()  # claims(..., name=DROP) removes a claim

_ALGS = get_default_algorithms()


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class TestKey:
    """A private key (or HMAC secret), its kid and alg, and its public JWK."""

    __test__ = False  # not a pytest class

    kid: str
    alg: str
    private: Any
    public_jwk: dict[str, Any]

    @property
    def public(self) -> Any:
        """What plain PyJWT would be pinned to: the secret or the public key object."""
        if self.alg == "HS256":
            return self.private
        return self.private.public_key()

    def sign(self, signing_input: bytes) -> bytes:
        return _ALGS[self.alg].sign(signing_input, self.private)


def make_key(alg: str, kid: str | None = None) -> TestKey:
    """A fresh key for ``alg`` (HS256, RS256, ES256, EdDSA)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
    private: Any
    if alg == "HS256":
        private = secrets.token_bytes(32)
        jwk = HMACAlgorithm.to_jwk(private, as_dict=True)
    elif alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(alg)
    return TestKey(kid, alg, private, {**jwk, "kid": kid, "alg": alg})


def jwks(*keys: TestKey) -> dict[str, Any]:
    return {"keys": [dict(k.public_jwk) for k in keys]}


def claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    """RFC 9068 access-token claims valid at ``now``; ``name=DROP`` removes one."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1001",
        "client_id": "rider-app",
        "scope": "orders:read",
        "iat": int(now) - 10,
        "exp": int(now) + 290,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def header(key: TestKey | None = None, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"typ": "at+jwt"}
    if key is not None:
        base.update(alg=key.alg, kid=key.kid)
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def segment(part: Mapping[str, Any] | bytes | str) -> str:
    """A dict as compact JSON, bytes as they are, a str as its UTF-8 (then base64url)."""
    if isinstance(part, Mapping):
        return b64(compact_json(part))
    if isinstance(part, str):
        return b64(part.encode("utf-8"))
    return b64(part)


def mint(
    key: TestKey,
    payload: Mapping[str, Any] | bytes | str | None = None,
    hdr: Mapping[str, Any] | bytes | str | None = None,
) -> str:
    """A compact JWS signed by ``key`` (default header and claims unless given)."""
    signing_input = (
        segment(header(key) if hdr is None else hdr)
        + "."
        + segment(claims() if payload is None else payload)
    )
    return signing_input + "." + b64(key.sign(signing_input.encode("ascii")))


def with_signature(token: str, signature: bytes | str) -> str:
    head, body, _ = token.split(".")
    sig = signature if isinstance(signature, str) else b64(signature)
    return f"{head}.{body}.{sig}"


def dpop_proof(
    holder: TestKey,
    access_token: str,
    *,
    method: str = "POST",
    url: str = "https://api.o2o.test/orders",
    now: float = NOW,
    hdr: Mapping[str, Any] | None = None,
    signer: TestKey | None = None,
    **overrides: Any,
) -> str:
    """An RFC 9449 proof by ``holder`` for a request with ``access_token``."""
    ath = b64(hashlib.sha256(access_token.encode("ascii")).digest())
    body: dict[str, Any] = {
        "jti": uuid.uuid4().hex,
        "htm": method,
        "htu": url,
        "iat": int(now),
        "ath": ath,
    }
    body.update(overrides)
    body = {k: v for k, v in body.items() if v is not DROP}
    public = {k: v for k, v in holder.public_jwk.items() if k not in ("kid", "alg")}
    h = {"typ": "dpop+jwt", "alg": holder.alg, "jwk": public} if hdr is None else dict(hdr)
    return mint(signer or holder, body, h)


def nested(depth: int) -> Any:
    """A JSON value ``depth`` arrays deep: ``nested(2) == [[0]]``."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def thumbprint(key: TestKey) -> str:
    return jwk_thumbprint(key.public_jwk)
