"""The field ciphertext: a versioned, self-describing AES-256-GCM envelope.

Layout (format 1), byte by byte::

    offset  size  field
    0       1     format version            0x01
    1       4     keyset id                 unsigned, big-endian (rg_crypto_keyset.id)
    5       4     key version               unsigned, big-endian (rg_crypto_key.version)
    9       4     context check             SHA-256(context)[:4]
    13      12    nonce                     random (os.urandom)
    25      n+16  AES-256-GCM ciphertext and tag
                  AAD = bytes 0..25 (the whole header) || context

``context`` binds the value to its place (see :func:`encode_context`): table, column and,
where used, the row's primary key and the data subject. The header names the key by id and
version, so decryption looks the key up directly and never tries keys in turn.

The context check is not secret (the context is not secret either); it lets a decryption
say *which* check failed — a value copied to another column or row fails ``context`` before
the tag is tried, a changed byte fails ``tag`` — without revealing anything of the
plaintext. The header is inside the AAD, so the check cannot be edited to match.

Text columns hold the envelope as unpadded base64url (a 13-byte phone: 54 bytes, 72
characters); binary columns hold the bytes.

Why AES-256-GCM: hardware-accelerated everywhere riskguard runs and the AEAD
``cryptography`` exposes with the least overhead per call (what a column type pays on every
row). Its limit of 2^32 messages per key under random nonces is far above a field key's
life: ``riskguard keys rotate`` promotes a new version long before.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from riskguard.errors import DecryptionError

__all__ = [
    "FORMAT_V1",
    "HEADER_SIZE",
    "Envelope",
    "context_check",
    "decode_text",
    "encode_context",
    "encode_text",
    "parse",
    "row_key",
]

FORMAT_V1 = 1
_PREFIX = struct.Struct(">BII")  # format, keyset id, key version
HEADER_SIZE = 25
NONCE_SIZE = 12
TAG_SIZE = 16
MIN_SIZE = HEADER_SIZE + TAG_SIZE
_CONTEXT_LABEL = b"riskguard/field/1"
_MAX_U32 = 0xFFFFFFFF


def _lp(part: str | bytes) -> bytes:
    raw = part.encode("utf-8") if isinstance(part, str) else part
    if len(raw) > 0xFFFF:
        raise ValueError("a context part is longer than 65535 bytes")
    return struct.pack(">H", len(raw)) + raw


def encode_context(
    table: str, column: str, row: str | None = None, subject: str | None = None
) -> bytes:
    """The associated data that binds a value to its place.

    ``label || lp(table) || lp(column) || lp(row or "") || lp(subject or "")`` where ``lp``
    is a 2-byte big-endian length and the UTF-8 bytes; a missing row or subject is empty,
    which no real row id or subject id is (they are refused when empty).
    """
    return b"".join((_CONTEXT_LABEL, _lp(table), _lp(column), _lp(row or ""), _lp(subject or "")))


def row_key(parts: Sequence[object]) -> str:
    """The row id bound into a per-row context: the primary key's value, or for a
    composite key each part as ``<length>:<text>`` (unambiguous, unlike a separator)."""
    texts = [str(p) for p in parts]
    if len(texts) == 1:
        return texts[0]
    return "".join(f"{len(t)}:{t}" for t in texts)


def context_check(context: bytes) -> bytes:
    """The 4-byte context check written in the header."""
    return hashlib.sha256(context).digest()[:4]


def key_prefix(keyset_id: int, version: int) -> bytes:
    """Header bytes 0..9 for a key (precomputed per key by the cipher)."""
    if not (0 < keyset_id <= _MAX_U32 and 0 < version <= _MAX_U32):
        raise ValueError("keyset id and version must fit in 32 bits")
    return _PREFIX.pack(FORMAT_V1, keyset_id, version)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed ciphertext: which key, the context check, and the bytes to open."""

    keyset_id: int
    version: int
    check: bytes
    header: bytes
    nonce: bytes
    sealed: bytes


def parse(data: bytes) -> Envelope:
    """Split a binary ciphertext into its fields.

    :raises DecryptionError: ``check="format"`` when it is too short, ``check="version"``
        when the format byte is unknown.
    """
    if len(data) < MIN_SIZE:
        raise DecryptionError(
            f"the ciphertext is {len(data)} bytes, shorter than the {MIN_SIZE}-byte minimum "
            "(truncated, or not a riskguard ciphertext)",
            check="format",
        )
    fmt, keyset_id, version = _PREFIX.unpack_from(data)
    if fmt != FORMAT_V1:
        raise DecryptionError(
            f"unknown ciphertext format {fmt} (this riskguard reads format {FORMAT_V1})",
            check="version",
        )
    if keyset_id == 0 or version == 0:
        raise DecryptionError("the ciphertext names key 0, which never exists", check="format")
    return Envelope(
        keyset_id,
        version,
        data[9:13],
        data[:HEADER_SIZE],
        data[13:HEADER_SIZE],
        data[HEADER_SIZE:],
    )


# base64url <-> base64: "-_" become "+/"; a "+", "/" or "=" in the input becomes "!", which
# strict decoding refuses (they are not base64url, and riskguard writes no padding).
_FROM_URLSAFE = bytes.maketrans(b"-_+/=", b"+/!!!")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PAD = (b"", None, b"==", b"=")
# The last character of a canonical encoding leaves the unused low bits zero.
_CANONICAL_LAST = (None, None, frozenset("AQgw"), frozenset("AEIMQUYcgkosw048"))


def encode_text(data: bytes) -> str:
    """Unpadded base64url."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def decode_text(text: str) -> bytes:
    """The bytes of an unpadded base64url ciphertext.

    :raises DecryptionError: ``check="format"`` when it is not canonical unpadded base64url
        (re-encoded with another alphabet or with padding, damaged, or not a ciphertext at
        all). Non-canonical trailing bits are refused too, so one value has one spelling.
    """
    if not isinstance(text, str):
        raise DecryptionError("a text ciphertext must be a str", check="format")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise DecryptionError("the ciphertext is not base64url", check="format") from None
    rem = len(raw) % 4
    pad = _PAD[rem]
    last = _CANONICAL_LAST[rem]
    if pad is None or (last is not None and text[-1] not in last):
        raise DecryptionError(
            "the ciphertext is not canonical unpadded base64url (re-encoded or damaged)",
            check="format",
        )
    try:
        return binascii.a2b_base64(raw.translate(_FROM_URLSAFE) + pad, strict_mode=True)
    except binascii.Error:
        raise DecryptionError(
            "the ciphertext is not base64url (re-encoded, damaged, or not a riskguard ciphertext)",
            check="format",
        ) from None
