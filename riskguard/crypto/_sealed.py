"""Sealed boxes: values a service writes but only a back-office role can read.

A courier-onboarding service holds only a :class:`SealingPublicKey` and seals the ID-card
number it collects; the back office, holding the :class:`SealingKeyPair`, opens it. A leak
of the onboarding service (or of its database) reveals nothing it wrote::

    pair = SealingKeyPair.generate()            # back office; keep pair.wrap(provider)
    pem = pair.public_pem()                     # ship this to writer services
    box = SealingPublicKey.from_pem(pem).seal(b"11010519491231002X",
                                              context=b"courier.id_number:c-1001")
    pair.open(box, context=b"courier.id_number:c-1001")

The construction is HPKE (RFC 9180) base mode, single shot, from
``cryptography.hazmat.primitives.hpke``: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM. AES-256-GCM rather than ChaCha20-Poly1305 because it is the AEAD of every
other riskguard envelope (one primitive to review and to name in a compliance answer, and
the FIPS-approved one), it runs on AES instructions on every server riskguard targets, and
single-shot HPKE derives a fresh key and nonce per message, so GCM's nonce-reuse fragility
does not arise. ChaCha20-Poly1305's advantage, constant time without AES hardware, does
not apply to these hosts.

Ciphertext format (offsets in bytes)::

    offset  size   field
    0       1      version, 0x01
    1       8      key id: SHA-256(recipient X25519 public key, raw 32 bytes)[:8]
    9       32     enc: the HPKE encapsulated key (the ephemeral X25519 public key)
    41      n+16   the HPKE AES-256-GCM ciphertext of the n-byte plaintext, then the tag

    info = b"riskguard/sealed-box/v1" || 0x00 || key id || context          (HPKE info)
    aad  = empty

``info`` binds the version (by its label), the recipient's key id and the caller's
``context`` (e.g. ``b"courier.id_number:<courier id>"``), so a box moved to another record
or re-labelled with another key id fails; ``enc`` is bound by the KEM itself.
``tests/vectors/sealed_box.json`` holds known-answer vectors; ``cryptography``'s HPKE draws
its ephemeral key internally, so they are produced by an independent RFC 9180
implementation in the tests, which also checks the RFC's own vectors.

Private keys at rest: :meth:`SealingKeyPair.wrap` wraps the raw X25519 private key with a
:class:`~riskguard.crypto._providers.KeyProvider` under the context
``b"sealing-key:<key id hex>"``::

    offset  size   field
    0       1      version, 0x01
    1       8      key id
    9       rest   the provider's wrapped-key blob
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from riskguard.crypto._providers import KeyProvider
from riskguard.errors import DecryptionError, KeyManagementError

__all__ = ["SealingKeyPair", "SealingPublicKey"]

_VERSION = 0x01
_WRAP_VERSION = 0x01
_KID_BYTES = 8
_ENC_BYTES = 32
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KID_BYTES + _ENC_BYTES
_INFO_LABEL = b"riskguard/sealed-box/v1\x00"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
# A fixed scalar for the low-order check in SealingPublicKey (not a secret: it only tests
# that a Diffie-Hellman with the point yields a non-zero secret).
_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"riskguard/x25519-probe").digest())


def _key_id(raw_public: bytes) -> bytes:
    return hashlib.sha256(raw_public).digest()[:_KID_BYTES]


def _info(kid: bytes, context: bytes) -> bytes:
    if not isinstance(context, bytes | bytearray):
        raise TypeError("context must be bytes, e.g. b'courier.id_number:<courier id>'")
    return _INFO_LABEL + kid + bytes(context)


class SealingPublicKey:
    """The public half: anyone holding it can seal; nobody holding only it can open.

    :param raw: the 32-byte X25519 public key.
    :raises KeyManagementError: not 32 bytes, or a low-order point (no shared secret).
    """

    __slots__ = ("_key", "_raw", "key_id")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise KeyManagementError("a sealing public key is 32 raw X25519 bytes")
        self._raw = bytes(raw)
        self._key = X25519PublicKey.from_public_bytes(self._raw)
        try:
            _PROBE.exchange(self._key)
        except ValueError:
            raise KeyManagementError(
                "the sealing public key is a low-order X25519 point: it cannot be used"
            ) from None
        self.key_id: bytes = _key_id(self._raw)

    @property
    def key_id_hex(self) -> str:
        """The key id as 16 hex digits (what logs and the wrap context show)."""
        return self.key_id.hex()

    @property
    def raw(self) -> bytes:
        """The 32-byte X25519 public key."""
        return self._raw

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt ``plaintext`` so that only the key pair can open it, bound to ``context``.

        :param context: where the value belongs, e.g. ``b"courier.id_number:c-1001"``.
        """
        if not isinstance(plaintext, bytes | bytearray):
            raise TypeError("plaintext must be bytes")
        sealed = _SUITE.encrypt(bytes(plaintext), self._key, info=_info(self.key_id, context))
        return bytes((_VERSION,)) + self.key_id + sealed

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, for distributing to writer services."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, pem: bytes | str) -> SealingPublicKey:
        """Load a PEM written by :meth:`to_pem` / :meth:`SealingKeyPair.public_pem`.

        :raises KeyManagementError: not a PEM X25519 public key.
        """
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise KeyManagementError("not a PEM public key") from None
        if not isinstance(key, X25519PublicKey):
            raise KeyManagementError("the PEM key is not an X25519 sealing key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SealingPublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"SealingPublicKey(key_id={self.key_id_hex})"


class SealingKeyPair:
    """The private half, for the role that reads sealed values. Keep it wrapped at rest
    (:meth:`wrap`); it never leaves this object otherwise."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: X25519PrivateKey) -> None:
        """Internal: use :meth:`generate` or :meth:`unwrap`."""
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = SealingPublicKey(raw)

    @classmethod
    def generate(cls) -> SealingKeyPair:
        """A fresh random key pair."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def _from_private_bytes(cls, raw: bytes) -> SealingKeyPair:
        """Deterministic seam for known-answer tests."""
        return cls(X25519PrivateKey.from_private_bytes(raw))

    @property
    def key_id(self) -> bytes:
        """The public key's 8-byte id (also in every box sealed to it)."""
        return self.public_key.key_id

    def public_pem(self) -> bytes:
        """The public key as PEM, for writer services."""
        return self.public_key.to_pem()

    def open(self, ciphertext: bytes, *, context: bytes) -> bytes:
        """The plaintext of a box sealed to this key pair under ``context``.

        :raises DecryptionError: ``check="format"`` (truncated), ``"version"``, ``"key"``
            (sealed to another key pair) or ``"tag"`` (wrong context, or modified).
        """
        if not isinstance(ciphertext, bytes | bytearray | memoryview):
            raise TypeError("ciphertext must be bytes")
        box = bytes(ciphertext)
        if len(box) < _HEADER_BYTES + _TAG_BYTES:
            raise DecryptionError("the sealed value is truncated", check="format")
        if box[0] != _VERSION:
            raise DecryptionError(
                f"unknown sealed-box version {box[0]}",
                check="version",
                hint="it was written by a newer riskguard, or it is not a sealed value",
            )
        kid = box[1 : 1 + _KID_BYTES]
        if kid != self.key_id:
            raise DecryptionError(
                f"the value was sealed to key {kid.hex()}, not to {self.key_id.hex()}",
                check="key",
                hint="open it with the key pair whose id it names",
            )
        try:
            return _SUITE.decrypt(box[1 + _KID_BYTES :], self._private, info=_info(kid, context))
        except InvalidTag:
            raise DecryptionError(
                "the sealed value does not authenticate: it belongs to another record "
                "(context) or was modified",
                check="tag",
            ) from None

    def wrap(self, provider: KeyProvider, *, purpose: str = "data") -> bytes:
        """The private key wrapped by ``provider`` (format in the module docstring)."""
        raw = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        wrapped = provider.wrap(raw, context=_wrap_context(self.key_id), purpose=purpose)
        return bytes((_WRAP_VERSION,)) + self.key_id + wrapped

    @classmethod
    def unwrap(cls, blob: bytes, provider: KeyProvider) -> SealingKeyPair:
        """The key pair from :meth:`wrap`'s blob.

        :raises KeyManagementError: malformed blob, the provider refuses (including
            ``KekDestroyed``), or the key does not match the id the blob names.
        """
        if not isinstance(blob, bytes | bytearray) or len(blob) < 2 + _KID_BYTES:
            raise KeyManagementError("the wrapped sealing key is truncated")
        if blob[0] != _WRAP_VERSION:
            raise KeyManagementError(f"unknown wrapped sealing-key version {blob[0]}")
        kid = bytes(blob[1 : 1 + _KID_BYTES])
        raw = provider.unwrap(bytes(blob[1 + _KID_BYTES :]), context=_wrap_context(kid))
        if len(raw) != 32:
            raise KeyManagementError("the wrapped sealing key is not an X25519 key")
        pair = cls._from_private_bytes(raw)
        if pair.key_id != kid:
            raise KeyManagementError(
                f"the unwrapped sealing key does not match key id {kid.hex()}",
                key_id=kid.hex(),
            )
        return pair

    def __repr__(self) -> str:
        return f"SealingKeyPair(key_id={self.key_id.hex()})"  # never the private key


def _wrap_context(kid: bytes) -> bytes:
    return b"sealing-key:" + kid.hex().encode("ascii")
