"""Signing keys for the token issuer: :class:`IssuerKey` and the rotating :class:`KeySet`.

A key set holds the *current* key (it signs), the *next* key (published but not yet
signing, so that verifiers which cache the JWKS know it before the first token signed with
it arrives) and *previous* keys, each published until the last token it signed has expired.
:meth:`KeySet.rotate` promotes next to current and makes a new next::

    keys = KeySet.generate("EdDSA")
    keys.jwks(now=t)                  # current + next (public members only)
    keys.rotate(now=t, overlap=330)   # the old current stays published until t + 330

Private keys never leave these objects except through :meth:`IssuerKey.to_pem`, which
always encrypts. HS256 secrets are never in :meth:`KeySet.jwks` (a JWKS is public); a
verifier in the issuing process gets them from :meth:`KeySet.verification_jwks`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)

from riskguard.auth._codec import b64url_encode
from riskguard.auth._jwks import MIN_HMAC_BYTES, MIN_RSA_BITS, SUPPORTED_ALGORITHMS, jwk_thumbprint
from riskguard.errors import KeyManagementError

__all__ = ["IssuerKey", "KeySet"]

_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()
_RSA_GENERATED_BITS = 3072  # NIST SP 800-57: 128-bit security; 2048 is the floor we accept


def _alg_of(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, bytes | bytearray):
        return "HS256"
    raise KeyManagementError(
        "unsupported key type: pass an Ed25519, P-256 or RSA private key, or HS256 bytes"
    )


def _check_key(key: Any, alg: str) -> None:
    if alg not in SUPPORTED_ALGORITHMS:
        raise KeyManagementError(
            f"algorithm {alg!r} is not one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )
    if _alg_of(key) != alg:
        raise KeyManagementError(f"the key is not a {alg} signing key")
    if alg == "HS256" and len(key) < MIN_HMAC_BYTES:
        raise KeyManagementError(
            f"an HS256 secret must be at least {MIN_HMAC_BYTES * 8} bits",
            hint="use secrets.token_bytes(32) or longer (RFC 7518 §3.2), or an asymmetric key",
        )
    if alg == "ES256" and not isinstance(key.curve, ec.SECP256R1):
        raise KeyManagementError("an ES256 key must be on the P-256 curve")
    if alg == "RS256" and key.key_size < MIN_RSA_BITS:
        raise KeyManagementError(f"an RS256 key must be at least {MIN_RSA_BITS} bits")


def _public_jwk(key: Any, alg: str) -> dict[str, Any]:
    public = key.public_key()
    if alg == "EdDSA":
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    elif alg == "ES256":
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    # PyJWT adds key_ops to RSA keys; RFC 7517 §4.3: use and key_ops not together.
    return {k: v for k, v in jwk.items() if k != "key_ops"}


class IssuerKey:
    """One private signing key (or HS256 secret) with its ``kid`` and pinned ``alg``.

    Asymmetric keys get the RFC 7638 thumbprint of their public key as ``kid`` unless one is
    given; HS256 secrets get a random one (a thumbprint of a secret is not for publishing).

    :raises KeyManagementError: unsupported algorithm or key type, an RSA key under 2048
        bits, an EC key not on P-256, an HS256 secret under 256 bits.
    """

    __slots__ = ("_alg", "_key", "_kid", "_public_jwk")

    def __init__(self, key: Any, *, alg: str | None = None, kid: str | None = None) -> None:
        alg = alg or _alg_of(key)
        _check_key(key, alg)
        if alg == "HS256":
            key = bytes(key)
            public = None
            kid = kid or f"hs256-{secrets.token_hex(8)}"
        else:
            public = _public_jwk(key, alg)
            kid = kid or jwk_thumbprint(public)
        if not isinstance(kid, str) or not kid:
            raise KeyManagementError("kid must be a non-empty string")
        self._alg = alg
        self._kid = kid
        self._key = _ALGORITHMS[alg].prepare_key(key)
        self._public_jwk = None if public is None else {**public, "kid": kid, "alg": alg}

    @classmethod
    def generate(cls, alg: str = "EdDSA", *, kid: str | None = None) -> IssuerKey:
        """A fresh key: Ed25519, P-256, RSA-3072 or a 256-bit HS256 secret.

        :raises KeyManagementError: ``alg`` is not supported.
        """
        key: Any
        if alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        elif alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_GENERATED_BITS)
        elif alg == "HS256":
            key = secrets.token_bytes(MIN_HMAC_BYTES)
        else:
            raise KeyManagementError(
                f"algorithm {alg!r} is not one of {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        return cls(key, alg=alg, kid=kid)

    @classmethod
    def from_pem(
        cls, data: bytes, *, password: bytes | None = None, kid: str | None = None
    ) -> IssuerKey:
        """Load a PEM private key (PKCS#8 or traditional); ``alg`` follows the key type.

        :raises KeyManagementError: the PEM does not load (wrong password, not a private
            key) or the key is unsupported or too weak.
        """
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise KeyManagementError(
                f"the PEM private key does not load ({type(exc).__name__})",
                key_id=kid,
                hint="check the password and that the file holds a private key",
            ) from None
        return cls(key, kid=kid)

    @property
    def kid(self) -> str:
        """The key id every token signed with this key carries."""
        return self._kid

    @property
    def alg(self) -> str:
        """The JWS algorithm this key is pinned to."""
        return self._alg

    @property
    def symmetric(self) -> bool:
        """``True`` for HS256: the verifier needs the secret itself."""
        return self._alg == "HS256"

    def public_jwk(self) -> dict[str, Any] | None:
        """The public JWK with ``kid``, ``alg`` and ``use``; ``None`` for an HS256 secret."""
        if self._public_jwk is None:
            return None
        return {**self._public_jwk, "use": "sig"}

    def _verification_jwk(self) -> dict[str, Any]:
        if self._public_jwk is not None:
            return {**self._public_jwk, "use": "sig"}
        return {"kty": "oct", "k": b64url_encode(self._key), "kid": self._kid,
                "alg": self._alg, "use": "sig"}  # fmt: skip

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature over ``signing_input`` (ES256: raw r||s, RFC 7518 §3.4)."""
        return _ALGORITHMS[self._alg].sign(signing_input, self._key)

    def to_pem(self, password: bytes) -> bytes:
        """The private key as encrypted PKCS#8 PEM (to keep in a secrets store).

        :raises KeyManagementError: an HS256 secret (keep those as bytes in a secrets
            store), or an empty password.
        """
        if self.symmetric:
            raise KeyManagementError("an HS256 secret has no PEM form", key_id=self._kid)
        if not password:
            raise KeyManagementError("a private key is only exported encrypted", key_id=self._kid)
        pem: bytes = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
        return pem

    def __repr__(self) -> str:  # never print key material
        return f"IssuerKey(kid={self._kid!r}, alg={self._alg!r})"


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


class KeySet:
    """The issuer's signing keys: current, next, and previous ones still published.

    :param current: the key that signs.
    :param next: the key :meth:`rotate` promotes; generated (same algorithm) when omitted.
    :param previous: ``(key, published_until)`` pairs for keys that signed tokens which
        may still be live.
    :raises KeyManagementError: two keys share a ``kid``.
    """

    def __init__(
        self,
        current: IssuerKey,
        next: IssuerKey | None = None,
        previous: Iterable[tuple[IssuerKey, float]] = (),
    ) -> None:
        nxt = next if next is not None else IssuerKey.generate(current.alg)
        prev = tuple((k, float(until)) for k, until in previous)
        self._check_unique(current, nxt, prev)
        self._lock = threading.Lock()
        # One immutable tuple, swapped whole: readers never see half a rotation.
        self._state: tuple[IssuerKey, IssuerKey, tuple[tuple[IssuerKey, float], ...]] = (
            current,
            nxt,
            prev,
        )

    @staticmethod
    def _check_unique(
        current: IssuerKey, nxt: IssuerKey, prev: tuple[tuple[IssuerKey, float], ...]
    ) -> None:
        kids = [current.kid, nxt.kid, *(k.kid for k, _ in prev)]
        if len(set(kids)) != len(kids):
            raise KeyManagementError("two keys of the key set share one kid")

    @classmethod
    def generate(cls, alg: str = "EdDSA") -> KeySet:
        """A key set with freshly generated current and next keys for ``alg``.

        :raises KeyManagementError: ``alg`` is not supported.
        """
        return cls(IssuerKey.generate(alg), IssuerKey.generate(alg))

    @property
    def current(self) -> IssuerKey:
        """The key that signs new tokens."""
        return self._state[0]

    @property
    def next(self) -> IssuerKey:
        """The key the next :meth:`rotate` promotes (already published)."""
        return self._state[1]

    @property
    def previous(self) -> tuple[tuple[IssuerKey, float], ...]:
        """Retired keys with the time until which they stay published."""
        return self._state[2]

    def rotate(
        self, *, now: float | None = None, overlap: float, next_key: IssuerKey | None = None
    ) -> IssuerKey:
        """Promote next to current; keep the old current published for ``overlap`` seconds.

        ``overlap`` must cover the longest token the old key may have signed (the access
        token lifetime) plus the verifiers' leeway. The new next key is ``next_key`` (for
        example one of another algorithm, to migrate) or a fresh key of the promoted key's
        algorithm. Previous keys whose window has passed are dropped.

        :returns: the new current key.
        :raises KeyManagementError: ``next_key`` reuses a ``kid`` of the set.
        :raises ValueError: ``overlap`` is negative.
        """
        if overlap < 0:
            raise ValueError("overlap must be ≥ 0 seconds")
        t = _now(now)
        with self._lock:
            current, nxt, prev = self._state
            fresh = next_key if next_key is not None else IssuerKey.generate(nxt.alg)
            kept = (*((k, u) for k, u in prev if u > t), (current, t + overlap))
            self._check_unique(nxt, fresh, kept)
            self._state = (nxt, fresh, kept)
            return nxt

    def _published(self, now: float | None) -> list[IssuerKey]:
        t = _now(now)
        current, nxt, prev = self._state
        return [current, nxt, *(k for k, until in prev if until > t)]

    def jwks(self, *, now: float | None = None) -> dict[str, Any]:
        """The public JWKS: current, next and previous keys still in their window, each
        with ``kid``, ``alg`` and ``use``. Never holds private members: HS256 secrets are
        left out (see :meth:`verification_jwks`)."""
        keys = [k.public_jwk() for k in self._published(now)]
        return {"keys": [jwk for jwk in keys if jwk is not None]}

    def verification_jwks(self, *, now: float | None = None) -> dict[str, Any]:
        """Like :meth:`jwks`, with HS256 secrets as ``oct`` keys.

        **It holds secrets when the set has HS256 keys: hand it only to a verifier in the
        issuing service, never publish or log it.** For asymmetric sets it equals
        :meth:`jwks`.
        """
        return {"keys": [k._verification_jwk() for k in self._published(now)]}

    def __repr__(self) -> str:
        current, nxt, prev = self._state
        return f"KeySet(current={current.kid!r}, next={nxt.kid!r}, previous={len(prev)})"
