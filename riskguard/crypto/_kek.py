"""What every KEK provider shares: the errors, :class:`KekInfo` and the wrapped-key format.

The providers live in their own modules (:mod:`._local`, :mod:`._keyfile`, :mod:`._envkey`,
:mod:`._transit`) and :mod:`._providers` is their facade: it holds the :class:`KeyProvider`
Protocol and :func:`provider_from_settings` and re-exports everything. The pieces the
providers have in common sit here, below all of them, rather than in the facade that
imports them: the imports then form a tree (``_kek`` <- providers <- ``_providers``), so
any of these modules can be imported first and none needs an import at its bottom.

Wrapped-key format
==================

Every offset is in bytes; ``L`` is the length of the KEK id, ``M`` that of the purpose::

    offset      size     field
    0           3        magic "RGK" (0x52 0x47 0x4B)
    3           1        scheme: 0x01 local AES-256-GCM KEK, 0x02 Transit
    4           1        L, 1..128
    5           L        KEK id, ASCII [A-Za-z0-9._:-] ("k3f9a0c1d2e4b", "riskguard-data:v3")
    5+L         1        M, 1..32
    6+L         M        purpose, ASCII [a-z0-9_-] starting with a letter ("data", "subject")
    -- scheme 0x01 (memory, file, env) --
    6+L+M       12       nonce, random
    18+L+M      n+16     AES-256-GCM(KEK, key, nonce, AAD) ciphertext, then the 16-byte tag
    -- scheme 0x02 (transit) --
    6+L+M       rest     the Transit ciphertext, ASCII "vault:v<N>:<base64>", of
                         SHA-256(AAD) || key; <N> equals the version in the KEK id

    header = bytes [0, 6+L+M)
    AAD    = b"riskguard/wrapped-key/v1" || 0x00 || header || context      (scheme 0x01)
    AAD    = b"riskguard/wrapped-key/v1" || 0x00 || header' || context     (scheme 0x02)

where ``context`` is the caller's (e.g. ``b"dek:<keyset>:<version>"``), so a wrapped key
moved to another key row fails to unwrap, and ``header'`` is the header with the KEK id
replaced by the Transit key *name* (the version is chosen by the service). Transit binds the
AAD twice: its digest rides inside the encrypted plaintext and is checked on unwrap, which
holds whatever the service does with it, and the AAD is also handed to the client, which
Vault binds as ``associated_data``.

This module parses and builds the header (:func:`_parse_blob`, :func:`_header`) and holds
the scheme-0x01 wrap core (:func:`_wrap_local_from_parts`); the local providers seal and
open scheme 0x01 (:mod:`._local`), :class:`~riskguard.crypto.TransitKeyProvider` scheme
0x02 (:mod:`._transit`).

KEK ids are short, unique and not secret: ``"k"`` + 12 hex digits, random for generated
KEKs and ``HKDF-SHA256(ikm=KEK, salt=none, info=b"riskguard/kek-id/v1")[:6]`` for KEKs
whose ids must be reproducible (:class:`~riskguard.crypto.EnvKeyProvider`, a seeded
:class:`~riskguard.crypto.MemoryKeyProvider`); Transit KEK ids are ``"<key name>:v<N>"``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from riskguard.errors import KeyManagementError

__all__ = [
    "KekDestroyed",
    "KekInfo",
    "KekState",
    "TransitError",
    "WrappedKeyError",
    "wrapped_kek_id",
]

KekState = Literal["primary", "decrypt_only", "destroyed"]

_MAGIC = b"RGK"
_SCHEME_LOCAL = 0x01
_SCHEME_TRANSIT = 0x02
_WRAP_LABEL = b"riskguard/wrapped-key/v1\x00"
_ID_LABEL = b"riskguard/kek-id/v1"
_KEK_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_MAX_KEY_BYTES = 1024
_KEK_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


# -- errors -------------------------------------------------------------------------------


class KekDestroyed(KeyManagementError):
    """The KEK a blob names was destroyed: what it wrapped is unrecoverable (by design)."""

    code = "kek_destroyed"


class WrappedKeyError(KeyManagementError):
    """A wrapped key cannot be unwrapped. ``check`` names the failed check: ``format`` (not a
    wrapped key, truncated, another provider's scheme), ``unknown_kek`` (this provider has no
    such KEK), ``purpose`` (the blob's purpose is not its KEK's) or ``tag`` (wrong context, or
    the blob was modified)."""

    code = "wrapped_key"

    def __init__(
        self, message: str, *, check: str, key_id: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, key_id=key_id, hint=hint)
        self.check = check

    def where(self) -> str | None:
        base = super().where()
        return f"{base}, check {self.check}" if base else f"check {self.check}"


class TransitError(KeyManagementError):
    """A :class:`TransitClient` call failed (refused, unreachable, malformed answer). Clients
    raise it; :class:`TransitKeyProvider` turns it into the errors above where it can."""

    code = "transit"


# -- what a provider tells about a KEK ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class KekInfo:
    """What :meth:`KeyProvider.keks` tells about one KEK (never its material).

    ``purpose`` is ``"*"`` for a KEK that serves every purpose (:class:`EnvKeyProvider`);
    ``created`` is ``None`` when the provider cannot know it (an environment variable).
    """

    id: str
    purpose: str
    state: KekState
    created: datetime | None
    destroyed: datetime | None = None


# -- the wrapped-key format ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Blob:
    scheme: int
    kek_id: str
    purpose: str
    header: bytes
    body: bytes


def _header(scheme: int, kek_id: str, purpose: str) -> bytes:
    kid, pur = kek_id.encode("ascii"), purpose.encode("ascii")
    return _MAGIC + bytes((scheme, len(kid))) + kid + bytes((len(pur),)) + pur


def _bad_blob(what: str, *, check: str = "format", key_id: str | None = None) -> WrappedKeyError:
    return WrappedKeyError(
        f"cannot unwrap the key: {what}",
        check=check,
        key_id=key_id,
        hint="the stored wrapped key is damaged or was not written by riskguard",
    )


def _parse_blob(wrapped: bytes) -> _Blob:
    if not isinstance(wrapped, bytes | bytearray | memoryview):
        raise TypeError("wrapped must be bytes")
    blob = bytes(wrapped)
    if len(blob) < 7 or blob[:3] != _MAGIC:
        raise _bad_blob("it is not a riskguard wrapped key (bad magic or too short)")
    scheme = blob[3]
    if scheme not in (_SCHEME_LOCAL, _SCHEME_TRANSIT):
        raise _bad_blob(f"unknown wrap scheme 0x{scheme:02x}")
    end = 5 + blob[4]
    if blob[4] == 0 or len(blob) < end + 2:
        raise _bad_blob("the KEK id is truncated")
    kek_id = blob[5:end].decode("ascii", errors="replace")
    if not _KEK_ID_RE.fullmatch(kek_id):
        raise _bad_blob("the KEK id is not a valid id")
    pend = end + 1 + blob[end]
    if blob[end] == 0 or len(blob) < pend:
        raise _bad_blob("the purpose is truncated", key_id=kek_id)
    purpose = blob[end + 1 : pend].decode("ascii", errors="replace")
    if not _PURPOSE_RE.fullmatch(purpose):
        raise _bad_blob("the purpose is not a valid purpose", key_id=kek_id)
    return _Blob(scheme, kek_id, purpose, blob[:pend], blob[pend:])


def wrapped_kek_id(wrapped: bytes) -> str:
    """The id of the KEK a wrapped key names (what the keyring stores beside it).

    :raises WrappedKeyError: ``check="format"``, not a wrapped key.
    """
    return _parse_blob(wrapped).kek_id


def _check_inputs(key: bytes | None, context: bytes, purpose: str | None = None) -> None:
    if key is not None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("key must be bytes")
        if not 1 <= len(key) <= _MAX_KEY_BYTES:
            raise KeyManagementError(f"a wrapped key must be 1 to {_MAX_KEY_BYTES} bytes long")
    if not isinstance(context, bytes | bytearray):
        raise TypeError("context must be bytes, e.g. b'dek:<keyset>:<version>'")
    if purpose is not None:
        _check_purpose(purpose)


def _check_purpose(purpose: str) -> None:
    if not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose):
        raise KeyManagementError(
            f"invalid KEK purpose {purpose!r}",
            hint="a purpose is a short lowercase name such as 'data' or 'subject'",
        )


def _wrap_local_from_parts(
    kek_id: str, kek: bytes, purpose: str, key: bytes, context: bytes, nonce: bytes
) -> bytes:
    """The deterministic core of a scheme-0x01 wrap (tests pin the format with it)."""
    header = _header(_SCHEME_LOCAL, kek_id, purpose)
    return header + nonce + AESGCM(kek).encrypt(nonce, bytes(key), _WRAP_LABEL + header + context)


# -- shared helpers -----------------------------------------------------------------------


def _fingerprint_id(material: bytes) -> str:
    digest = HKDF(algorithm=hashes.SHA256(), length=6, salt=None, info=_ID_LABEL).derive(material)
    return "k" + digest.hex()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    """Strict base64url (padding optional); ``+`` and ``/`` are accepted too."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    if len(cleaned) % 4 == 1:
        raise ValueError("impossible base64 length")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)
