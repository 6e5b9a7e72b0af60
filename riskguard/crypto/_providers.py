"""Key-encryption keys (KEKs) behind one :class:`KeyProvider` Protocol, and the data-key wrap.

riskguard's data keys (DEKs) live in its own tables, *wrapped* (encrypted) under a KEK that
never touches the database. A provider holds the KEKs and does two things with them: wrap a
key under the primary KEK of a purpose (``"data"`` for field and blind-index keys,
``"subject"`` for per-subject keys) and unwrap a blob, which names its KEK, so the lookup is
O(1) and nothing is decrypted on trial.

Providers
=========

===========================  ===========================================================
:class:`MemoryKeyProvider`   in memory, every operation; the test double and the demo
:class:`FileKeyProvider`     an encrypted keyring file (scrypt passphrase, AES-256-GCM)
:class:`EnvKeyProvider`      one KEK in ``$RISKGUARD_KEK`` (older ones decrypt only)
:class:`TransitKeyProvider`  a KMS / Vault Transit through a :class:`TransitClient`
===========================  ===========================================================

:func:`provider_from_settings` builds the one ``[keys]`` in ``riskguard.toml`` asks for.

Crypto-shredding and backups. Destroying a KEK erases its material, so every key wrapped
under it is gone, *including the copies in old database backups*. That only holds while no
copy of the KEK survives elsewhere: a backup of the keyring file made before the destroy
still holds it, so keep keyring backups apart from database backups and expire them.
:class:`EnvKeyProvider` cannot destroy anything (the key lives in your deployment's
secrets), so crypto-shredding against old backups is not available with it. Transit trims
key versions from the low end only, so its KEKs are destroyed in ascending order.

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

KEK ids are short, unique and not secret: ``"k"`` + 12 hex digits, random for generated
KEKs and ``HKDF-SHA256(ikm=KEK, salt=none, info=b"riskguard/kek-id/v1")[:6]`` for KEKs
whose ids must be reproducible (:class:`EnvKeyProvider`, a seeded
:class:`MemoryKeyProvider`); Transit KEK ids are ``"<key name>:v<N>"``.

Keyring file
============

A JSON document whose header (format, version, scrypt parameters and salt, AEAD nonce) is
in clear and whose ``keyring`` member is ONE AES-256-GCM blob holding every KEK with its
purpose, state and times (base64url without padding throughout)::

    {"format": "riskguard-keyring", "version": 1,
     "kdf": {"name": "scrypt", "n": 65536, "r": 8, "p": 1, "salt": "<16 bytes>"},
     "aead": {"name": "AES-256-GCM", "nonce": "<12 bytes>"},
     "keyring": "<AES-256-GCM ciphertext || tag of the canonical JSON
                 {"generation": 7, "keks": [{"id", "purpose", "state", "created",
                                             "destroyed", "key"}, ...]}>"}

The AEAD key is ``scrypt(passphrase)`` (the passphrase NFC-normalised, UTF-8); the AAD is
``b"riskguard/keyring-file/v1" || 0x00 || canonical JSON of the header`` (sorted keys, no
spaces), so the whole file is authenticated: nothing in it, states included, can be edited
without the passphrase. Every change is written to a temporary file in the same folder,
fsynced, moved over the old one with ``os.replace`` and the folder fsynced (mode 0600), all
under ``fcntl.flock`` on a ``<file>.lock`` sibling, after re-reading the file: a crash never
leaves half a keyring and two processes never lose each other's rotations.

Default scrypt cost: n = 2**16, r = 8, p = 1 (64 MiB, about 170-230 ms on a 2-vCPU AMD EPYC
server, measured). The passphrase is a machine secret kept in an environment variable, so
its length, not the KDF, is the main defence; the cost is in the interactive band (opening
the keyring is a start-up cost) and slows a stolen-file guessing attack at 64 MiB a guess.
``scrypt_n=2**17`` (OWASP's password-storage figure, about 340 ms here) is accepted too;
2**14 is the minimum (tests) and 2**20 the maximum a file may ask for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from loguru import logger

from riskguard.errors import KeyManagementError

if TYPE_CHECKING:
    import httpx

    from riskguard.config import Settings

__all__ = [
    "DEFAULT_SCRYPT_N",
    "MIN_SCRYPT_N",
    "EnvKeyProvider",
    "FileKeyProvider",
    "KekDestroyed",
    "KekInfo",
    "KekState",
    "KeyProvider",
    "MemoryKeyProvider",
    "TransitClient",
    "TransitError",
    "TransitKeyProvider",
    "TransitKeyVersions",
    "VaultTransitClient",
    "WrappedKeyError",
    "provider_from_settings",
    "wrapped_kek_id",
]

_log = logger.bind(component="crypto")
_T = TypeVar("_T")

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
_DEFAULT_PURPOSES = ("data", "subject")

DEFAULT_SCRYPT_N = 2**16
MIN_SCRYPT_N = 2**14
_MAX_SCRYPT_N = 2**20
_SCRYPT_R = 8
_SCRYPT_P = 1
_FILE_FORMAT = "riskguard-keyring"
_FILE_VERSION = 1
_FILE_LABEL = b"riskguard/keyring-file/v1\x00"
_MAX_FILE_BYTES = 1 << 20
_MIN_PASSPHRASE_CHARS = 8
_ANY_PURPOSE = "*"


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


# -- the Protocol -------------------------------------------------------------------------


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


@runtime_checkable
class KeyProvider(Protocol):
    """Holds key-encryption keys (KEKs) and wraps data keys under them."""

    name: str  # e.g. "file:/path/keyring.json", "env:RISKGUARD_KEK", "memory", "transit:…"

    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the primary KEK for ``purpose``, bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key in ``wrapped``; the blob names its KEK. Raises :class:`KekDestroyed`."""
        ...

    def rotate(self, purpose: str = "data") -> str:
        """A new primary KEK for ``purpose``; the old one becomes decrypt-only. Its id."""
        ...

    def destroy(self, kek_id: str) -> None:
        """Erase a KEK's material, irreversibly."""
        ...

    def keks(self) -> list[KekInfo]:
        """Every KEK this provider knows, destroyed ones included."""
        ...


# -- the blob format ----------------------------------------------------------------------


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


def _fingerprint_id(material: bytes) -> str:
    digest = HKDF(algorithm=hashes.SHA256(), length=6, salt=None, info=_ID_LABEL).derive(material)
    return "k" + digest.hex()


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- local KEKs ---------------------------------------------------------------------------


class _Kek:
    """One KEK. ``material`` is a bytearray so that destroy can overwrite it (best effort:
    Python and OpenSSL may hold copies; the guarantee is that no *stored* copy remains)."""

    __slots__ = ("_aead", "created", "destroyed", "id", "material", "purpose", "state")

    def __init__(
        self,
        kek_id: str,
        purpose: str,
        state: KekState,
        created: datetime | None,
        material: bytes | bytearray | None,
        destroyed: datetime | None = None,
    ) -> None:
        self.id = kek_id
        self.purpose = purpose
        self.state: KekState = state
        self.created = created
        self.destroyed = destroyed
        self.material = bytearray(material) if material is not None else None
        self._aead: AESGCM | None = None

    def aead(self) -> AESGCM:
        if self.material is None:
            raise KekDestroyed(
                f"the key-encryption key {self.id} was destroyed: "
                "the keys wrapped under it cannot be recovered",
                key_id=self.id,
            )
        if self._aead is None:
            self._aead = AESGCM(bytes(self.material))
        return self._aead

    def copy(self) -> _Kek:
        twin = _Kek(self.id, self.purpose, self.state, self.created, None, self.destroyed)
        twin.material = self.material  # shared until a commit erases the old one
        twin._aead = self._aead
        return twin

    def info(self) -> KekInfo:
        return KekInfo(self.id, self.purpose, self.state, self.created, self.destroyed)


def _open_local(blob: _Blob, kek: _Kek, context: bytes) -> bytes:
    if kek.purpose not in (_ANY_PURPOSE, blob.purpose):
        raise _bad_blob(
            f"the blob says purpose {blob.purpose!r} but its KEK serves {kek.purpose!r}",
            check="purpose",
            key_id=kek.id,
        )
    if len(blob.body) < _NONCE_BYTES + _TAG_BYTES + 1:
        raise _bad_blob("the ciphertext is truncated", key_id=kek.id)
    nonce, sealed = blob.body[:_NONCE_BYTES], blob.body[_NONCE_BYTES:]
    try:
        return kek.aead().decrypt(nonce, sealed, _WRAP_LABEL + blob.header + bytes(context))
    except InvalidTag:
        raise WrappedKeyError(
            f"the wrapped key does not authenticate under KEK {kek.id}: the context differs "
            "(the blob belongs to another key row) or the blob was modified",
            check="tag",
            key_id=kek.id,
        ) from None


class _Keyring:
    """Memory and file providers: KEKs by id, one primary per purpose, a lock around all.

    Changes are made on a copy (:meth:`_mutate`), persisted (:meth:`_persist`) and only then
    become the live state, so a failed write leaves the provider as it was.
    """

    name: str

    def __init__(self, keks: dict[str, _Kek], clock: Callable[[], datetime] | None) -> None:
        self._lock = threading.RLock()
        self._keks = keks
        self._clock = clock or _utcnow

    # hooks ------------------------------------------------------------------------------
    def _refresh(self, *, force: bool = False) -> None:
        """Pick up changes made elsewhere (the file provider re-reads a changed file)."""

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        yield

    def _persist(self, keks: dict[str, _Kek]) -> None:
        """Store ``keks`` durably before they become live (no-op in memory)."""

    def _new_material(self, keks: Mapping[str, _Kek]) -> tuple[str, bytes]:
        material = os.urandom(_KEK_BYTES)
        kek_id = "k" + secrets.token_hex(6)
        while kek_id in keks:  # pragma: no cover - 48 random bits
            kek_id = "k" + secrets.token_hex(6)
        return kek_id, material

    # the Protocol -----------------------------------------------------------------------
    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the primary KEK for ``purpose``, bound to ``context``.

        :raises KeyManagementError: no KEK for ``purpose`` yet (``rotate(purpose)`` makes
            one), or an empty / oversized key.
        """
        _check_inputs(key, context, purpose)
        with self._lock:
            self._refresh()
            kek = self._primary(self._keks, purpose)
            header = _header(_SCHEME_LOCAL, kek.id, purpose)
            nonce = os.urandom(_NONCE_BYTES)
            aad = _WRAP_LABEL + header + bytes(context)
            return header + nonce + kek.aead().encrypt(nonce, bytes(key), aad)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key inside ``wrapped``.

        :raises KekDestroyed: its KEK was destroyed.
        :raises WrappedKeyError: ``format``, ``unknown_kek``, ``purpose`` or ``tag``.
        """
        _check_inputs(None, context)
        blob = _parse_blob(wrapped)
        if blob.scheme != _SCHEME_LOCAL:
            raise _bad_blob("it was wrapped by a Transit provider", key_id=blob.kek_id)
        with self._lock:
            self._refresh()
            kek = self._keks.get(blob.kek_id)
            if kek is None:
                raise _bad_blob(
                    f"{self.name} has no KEK {blob.kek_id}",
                    check="unknown_kek",
                    key_id=blob.kek_id,
                )
            return _open_local(blob, kek, context)

    def rotate(self, purpose: str = "data") -> str:
        """Make a new primary KEK for ``purpose`` (the first one, for a new purpose); the old
        primary becomes decrypt-only. Returns the new KEK id."""
        _check_purpose(purpose)

        def change(keks: dict[str, _Kek]) -> str:
            kek_id, material = self._new_material(keks)
            for kek in keks.values():
                if kek.purpose == purpose and kek.state == "primary":
                    kek.state = "decrypt_only"
            keks[kek_id] = _Kek(kek_id, purpose, "primary", self._clock(), material)
            return kek_id

        kek_id = self._mutate(change)
        _log.info("KEK rotated: {} is the primary {!r} KEK of {}", kek_id, purpose, self.name)
        return kek_id

    def destroy(self, kek_id: str) -> None:
        """Erase ``kek_id``'s material; everything wrapped under it becomes unrecoverable.
        Destroying an already destroyed KEK does nothing.

        :raises KeyManagementError: unknown KEK, or the primary of its purpose (rotate
            first, so that new keys have somewhere to go).
        """

        def change(keks: dict[str, _Kek]) -> bool:
            kek = keks.get(kek_id)
            if kek is None:
                raise KeyManagementError(f"{self.name} has no KEK {kek_id}", key_id=kek_id)
            if kek.state == "destroyed":
                return False
            if kek.state == "primary":
                raise KeyManagementError(
                    f"refusing to destroy {kek_id}: it is the primary {kek.purpose!r} KEK",
                    key_id=kek_id,
                    hint=f"rotate({kek.purpose!r}) first, rewrap what it wraps, then destroy",
                )
            twin = _Kek(kek.id, kek.purpose, "destroyed", kek.created, None, self._clock())
            keks[kek_id] = twin
            return True

        if self._mutate(change):
            _log.info("KEK destroyed: {} of {}", kek_id, self.name)

    def keks(self) -> list[KekInfo]:
        """Every KEK, oldest first, destroyed ones included (their material is gone)."""
        with self._lock:
            self._refresh()
            return [k.info() for k in _ordered(self._keks)]

    # internals --------------------------------------------------------------------------
    def _primary(self, keks: Mapping[str, _Kek], purpose: str) -> _Kek:
        for kek in keks.values():
            if kek.purpose == purpose and kek.state == "primary":
                return kek
        raise KeyManagementError(
            f"{self.name} has no KEK for purpose {purpose!r}",
            hint=f"create one with rotate({purpose!r})",
        )

    def _mutate(self, change: Callable[[dict[str, _Kek]], _T]) -> _T:
        with self._lock, self._exclusive():
            self._refresh(force=True)
            new = {k: v.copy() for k, v in self._keks.items()}
            result = change(new)
            self._persist(new)
            old, self._keks = self._keks, new
            _erase_dropped(old, new)
            return result


def _erase_dropped(old: Mapping[str, _Kek], new: Mapping[str, _Kek]) -> None:
    """Overwrite the material of KEKs that ``new`` no longer holds (destroyed)."""
    for kek_id, gone in old.items():
        kept = new.get(kek_id)
        if gone.material is not None and (kept is None or kept.material is not gone.material):
            if kept is None or kept.material is None:
                gone.material[:] = bytes(len(gone.material))
            gone.material, gone._aead = None, None


def _ordered(keks: Mapping[str, _Kek]) -> list[_Kek]:
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(keks.values(), key=lambda k: (k.created or epoch, k.id))


class MemoryKeyProvider(_Keyring):
    """KEKs in memory: every operation, nothing persisted. The test double and the demo.

    :param seed: makes KEK material and ids reproducible (tests); never use one in
        production. Without it, KEKs are random.
    :param purposes: a primary KEK is made for each at once.
    :param clock: the time source for ``created`` / ``destroyed`` (default: now, UTC).
    """

    def __init__(
        self,
        *,
        seed: bytes | None = None,
        purposes: Sequence[str] = _DEFAULT_PURPOSES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__({}, clock)
        self.name = "memory"
        self._seed = seed
        self._counter = 0
        for purpose in purposes:
            self.rotate(purpose)

    def _new_material(self, keks: Mapping[str, _Kek]) -> tuple[str, bytes]:
        if self._seed is None:
            return super()._new_material(keks)
        self._counter += 1
        info = b"riskguard/memory-kek/v1" + self._counter.to_bytes(4, "big")
        material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._seed
        )
        return _fingerprint_id(material), material


# -- keyring file -------------------------------------------------------------------------


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    """Strict base64url (padding optional); ``+`` and ``/`` are accepted too."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    if len(cleaned) % 4 == 1:
        raise ValueError("impossible base64 length")
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=True)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        text = unicodedata.normalize("NFC", passphrase)
        long_enough = len(text) >= _MIN_PASSPHRASE_CHARS
        raw = text.encode("utf-8")
    elif isinstance(passphrase, bytes | bytearray):
        raw = bytes(passphrase)
        long_enough = len(raw) >= _MIN_PASSPHRASE_CHARS
    else:
        raise TypeError("the passphrase must be str or bytes")
    if not long_enough:
        raise KeyManagementError(
            f"the keyring passphrase is too short (at least {_MIN_PASSPHRASE_CHARS} characters)",
            hint="generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return raw


@dataclass(frozen=True, slots=True)
class _Kdf:
    n: int
    r: int
    p: int
    salt: bytes

    def derive(self, passphrase: bytes) -> bytes:
        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(passphrase)

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": _b64e(self.salt)}


def _check_scrypt_n(n: int) -> None:
    if not isinstance(n, int) or n < MIN_SCRYPT_N or n > _MAX_SCRYPT_N or n & (n - 1):
        raise KeyManagementError(
            f"scrypt n must be a power of two from 2**14 to 2**20, not {n!r}",
            hint=f"the default is 2**{DEFAULT_SCRYPT_N.bit_length() - 1}",
        )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _kek_to_json(kek: _Kek) -> dict[str, Any]:
    return {
        "id": kek.id,
        "purpose": kek.purpose,
        "state": kek.state,
        "created": kek.created.isoformat() if kek.created else None,
        "destroyed": kek.destroyed.isoformat() if kek.destroyed else None,
        "key": _b64e(bytes(kek.material)) if kek.material is not None else None,
    }


def _encode_keyring(kdf: _Kdf, file_key: bytes, keks: Mapping[str, _Kek], generation: int) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    header = {
        "format": _FILE_FORMAT,
        "version": _FILE_VERSION,
        "kdf": kdf.to_json(),
        "aead": {"name": "AES-256-GCM", "nonce": _b64e(nonce)},
    }
    inner = _canonical(
        {"generation": generation, "keks": [_kek_to_json(k) for k in _ordered(keks)]}
    )
    sealed = AESGCM(file_key).encrypt(nonce, inner, _FILE_LABEL + _canonical(header))
    return (json.dumps({**header, "keyring": _b64e(sealed)}, indent=2) + "\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class _FileDoc:
    kdf: _Kdf
    aad: bytes
    nonce: bytes
    sealed: bytes


def _file_error(path: Path, what: str, hint: str | None = None) -> KeyManagementError:
    return KeyManagementError(
        f"the keyring file {path} {what}",
        hint=hint or "restore the keyring file from its backup; riskguard never writes it so",
    )


def _parse_keyring(path: Path, data: bytes) -> _FileDoc:
    if len(data) > _MAX_FILE_BYTES:
        raise _file_error(path, f"is larger than {_MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _file_error(path, "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _file_error(
            path, f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise _file_error(path, "is not a JSON object")
    missing = [k for k in ("format", "version", "kdf", "aead", "keyring") if k not in doc]
    if missing:
        raise _file_error(path, f"is missing {', '.join(repr(m) for m in missing)}")
    if doc["format"] != _FILE_FORMAT:
        raise _file_error(path, f"is not a riskguard keyring (format {doc['format']!r})")
    if doc["version"] != _FILE_VERSION:
        raise _file_error(
            path,
            f"has format version {doc['version']!r}; this riskguard reads version {_FILE_VERSION}",
            hint="open it with the riskguard release that wrote it, or a newer one",
        )
    kdf_doc, aead_doc = doc["kdf"], doc["aead"]
    try:
        if not isinstance(kdf_doc, dict) or kdf_doc.get("name") != "scrypt":
            raise ValueError("'kdf' must be scrypt")
        n, r, p = kdf_doc["n"], kdf_doc["r"], kdf_doc["p"]
        if not all(type(v) is int for v in (n, r, p)):
            raise ValueError("scrypt n, r and p must be integers")
        if n < MIN_SCRYPT_N or n > _MAX_SCRYPT_N or n & (n - 1):
            raise ValueError("scrypt n must be a power of two from 2**14 to 2**20")
        if not (1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt r must be 1..32 and p 1..16")
        salt = _b64d(kdf_doc["salt"])
        if not 16 <= len(salt) <= 64:
            raise ValueError("the scrypt salt must be 16 to 64 bytes")
        if not isinstance(aead_doc, dict) or aead_doc.get("name") != "AES-256-GCM":
            raise ValueError("'aead' must be AES-256-GCM")
        nonce = _b64d(aead_doc["nonce"])
        if len(nonce) != _NONCE_BYTES:
            raise ValueError("the AEAD nonce must be 12 bytes")
        sealed = _b64d(doc["keyring"])
        if len(sealed) < _TAG_BYTES:
            raise ValueError("the 'keyring' blob is truncated")
    except KeyError as exc:
        raise _file_error(path, f"is missing {exc.args[0]!r} in its header") from None
    except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise _file_error(path, f"has an invalid header: {exc}") from None
    header = {k: v for k, v in doc.items() if k != "keyring"}
    return _FileDoc(_Kdf(n, r, p, salt), _FILE_LABEL + _canonical(header), nonce, sealed)


def _decode_keks(path: Path, inner: bytes) -> tuple[dict[str, _Kek], int]:
    try:
        doc = json.loads(inner)
        keks: dict[str, _Kek] = {}
        for item in doc["keks"]:
            state = item["state"]
            if state not in ("primary", "decrypt_only", "destroyed"):
                raise ValueError("unknown KEK state")
            material = _b64d(item["key"]) if item["key"] is not None else None
            if (material is None) != (state == "destroyed") or (
                material is not None and len(material) != _KEK_BYTES
            ):
                raise ValueError("KEK material does not match its state")
            if not _KEK_ID_RE.fullmatch(item["id"]) or not _PURPOSE_RE.fullmatch(item["purpose"]):
                raise ValueError("invalid KEK id or purpose")
            keks[item["id"]] = _Kek(
                item["id"],
                item["purpose"],
                state,
                _parse_time(item["created"]),
                material,
                _parse_time(item["destroyed"]),
            )
        generation = int(doc["generation"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        # Never echo the decrypted payload: it holds key material.
        raise _file_error(path, "decrypted, but its contents are not a valid keyring") from None
    return keks, generation


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value is not None else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, ``os.replace``, fsync the folder; mode 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """``flock`` on ``<file>.lock``: serialises read-modify-write across processes. The lock
    file stays (removing it would let two processes lock two different inodes)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per keyring
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_Signature = tuple[int, int, int, int, int]


class FileKeyProvider(_Keyring):
    """KEKs in an encrypted keyring file (see the module docstring for its format).

    Open one with :meth:`open` (or :meth:`from_env`), make one with :meth:`create`. Every
    operation first checks (one ``stat``) whether another process replaced the file and
    re-reads it if so, so a rotation or destroy elsewhere is seen on the next call.
    """

    def __init__(
        self,
        path: Path,
        *,
        _kdf: _Kdf,
        _file_key: bytes,
        _keks: dict[str, _Kek],
        _generation: int,
        _signature: _Signature,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Internal: use :meth:`create`, :meth:`open` or :meth:`from_env`."""
        super().__init__(_keks, clock)
        self.path = path
        self.name = f"file:{path}"
        self._kdf = _kdf
        self._file_key = _file_key
        self._generation = _generation
        self._signature = _signature

    @classmethod
    def create(
        cls,
        path: str | Path,
        passphrase: str | bytes,
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        purposes: Sequence[str] = _DEFAULT_PURPOSES,
        clock: Callable[[], datetime] | None = None,
    ) -> FileKeyProvider:
        """Write a new keyring with one primary KEK per purpose (mode 0600).

        :raises KeyManagementError: the file exists (never overwritten), a short
            passphrase, a bad ``scrypt_n``, or the folder is not writable.
        """
        file = Path(path).expanduser().absolute()
        secret = _passphrase_bytes(passphrase)
        _check_scrypt_n(scrypt_n)
        for purpose in purposes:
            _check_purpose(purpose)
        now = (clock or _utcnow)()
        kdf = _Kdf(scrypt_n, _SCRYPT_R, _SCRYPT_P, os.urandom(16))
        file_key = kdf.derive(secret)
        keks: dict[str, _Kek] = {}
        for purpose in purposes:
            kek_id = "k" + secrets.token_hex(6)
            keks[kek_id] = _Kek(kek_id, purpose, "primary", now, os.urandom(_KEK_BYTES))
        try:
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _file_lock(file):
                if file.exists():
                    raise KeyManagementError(
                        f"the keyring file {file} already exists; refusing to overwrite it",
                        hint="open it with FileKeyProvider.open, or choose another path",
                    )
                _atomic_write(file, _encode_keyring(kdf, file_key, keks, 1))
                signature = _signature_of(file)
        except OSError as exc:
            raise _file_error(file, f"cannot be written: {exc.strerror or exc}") from exc
        _log.info("keyring created: {} with KEKs {}", file, ", ".join(keks))
        return cls(
            file,
            _kdf=kdf,
            _file_key=file_key,
            _keks=keks,
            _generation=1,
            _signature=signature,
            clock=clock,
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        passphrase: str | bytes,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> FileKeyProvider:
        """Open an existing keyring.

        :raises KeyManagementError: missing or unreadable file, malformed JSON (with the
            line), missing fields, unknown format version, or "cannot open the keyring:
            wrong passphrase, or the file was modified".
        """
        file = Path(path).expanduser().absolute()
        secret = _passphrase_bytes(passphrase)
        data, signature = _read(file)
        doc = _parse_keyring(file, data)
        file_key = doc.kdf.derive(secret)
        keks, generation = _decrypt_keyring(file, doc, file_key)
        if os.stat(file).st_mode & 0o077:
            _log.warning("keyring {} is readable by group or others; chmod 600 it", file)
        return cls(
            file,
            _kdf=doc.kdf,
            _file_key=file_key,
            _keks=keks,
            _generation=generation,
            _signature=signature,
            clock=clock,
        )

    @classmethod
    def from_env(
        cls,
        path: str | Path,
        passphrase_env: str = "RISKGUARD_KEYRING_PASSPHRASE",
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> FileKeyProvider:
        """:meth:`open` with the passphrase from the environment variable ``passphrase_env``.

        :raises KeyManagementError: the variable is unset or empty, or as :meth:`open`.
        """
        env = os.environ if environ is None else environ
        passphrase = env.get(passphrase_env, "")
        if not passphrase:
            raise KeyManagementError(
                f"the keyring passphrase variable {passphrase_env} is not set",
                hint=f"export {passphrase_env}=… (from your secret store) before starting",
            )
        return cls.open(path, passphrase, clock=clock)

    def change_passphrase(
        self, new_passphrase: str | bytes, *, scrypt_n: int | None = None
    ) -> None:
        """Re-encrypt the keyring under a new passphrase (fresh salt; ``scrypt_n`` may raise
        the cost). Other processes must re-open with the new passphrase."""
        secret = _passphrase_bytes(new_passphrase)
        with self._lock, self._exclusive():
            self._refresh(force=True)
            n = self._kdf.n if scrypt_n is None else scrypt_n
            _check_scrypt_n(n)
            kdf = _Kdf(n, _SCRYPT_R, _SCRYPT_P, os.urandom(16))
            file_key = kdf.derive(secret)
            self._write(kdf, file_key, self._keks)
            self._kdf, self._file_key = kdf, file_key
        _log.info("keyring passphrase changed: {}", self.path)

    # hooks ------------------------------------------------------------------------------
    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with _file_lock(self.path):
            yield

    def _refresh(self, *, force: bool = False) -> None:
        # A stat per operation catches another process's os.replace (new inode, times);
        # under the write lock the file is re-read regardless, so that not even an inode
        # reused within one timestamp tick can hide a change from a read-modify-write.
        try:
            signature = _signature_of(self.path)
        except OSError as exc:
            raise _file_error(self.path, f"cannot be read: {exc.strerror or exc}") from exc
        if signature == self._signature and not force:
            return
        data, signature = _read(self.path)
        doc = _parse_keyring(self.path, data)
        if doc.kdf != self._kdf:
            raise KeyManagementError(
                f"the keyring {self.path} was re-encrypted under another passphrase",
                hint="open the keyring again with the new passphrase",
            )
        keks, self._generation = _decrypt_keyring(self.path, doc, self._file_key)
        old, self._keks = self._keks, keks
        _erase_dropped(old, keks)
        self._signature = signature

    def _persist(self, keks: dict[str, _Kek]) -> None:
        self._write(self._kdf, self._file_key, keks)

    def _write(self, kdf: _Kdf, file_key: bytes, keks: Mapping[str, _Kek]) -> None:
        data = _encode_keyring(kdf, file_key, keks, self._generation + 1)
        try:
            _atomic_write(self.path, data)
            self._signature = _signature_of(self.path)
        except OSError as exc:
            raise _file_error(
                self.path,
                f"cannot be written: {exc.strerror or exc}",
                hint="the previous keyring is intact; fix the folder and retry",
            ) from exc
        self._generation += 1


def _signature_of(path: Path) -> _Signature:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _read(path: Path) -> tuple[bytes, _Signature]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyManagementError(
            f"the keyring file {path} does not exist",
            hint="create one with FileKeyProvider.create(path, passphrase), or fix the path",
        ) from None
    except OSError as exc:
        raise _file_error(path, f"cannot be read: {exc.strerror or exc}") from exc
    return data, (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _decrypt_keyring(path: Path, doc: _FileDoc, file_key: bytes) -> tuple[dict[str, _Kek], int]:
    try:
        inner = AESGCM(file_key).decrypt(doc.nonce, doc.sealed, doc.aad)
    except InvalidTag:
        _log.warning("keyring {} did not open: wrong passphrase or modified file", path)
        raise KeyManagementError(
            "cannot open the keyring: wrong passphrase, or the file was modified",
            hint=f"file {path}: check the passphrase (RISKGUARD_KEYRING_PASSPHRASE by "
            "default); if it is right, the file was changed outside riskguard: restore it",
        ) from None
    return _decode_keks(path, inner)


# -- environment --------------------------------------------------------------------------


def _decode_env_kek(value: str, var: str, position: str = "") -> bytes:
    try:
        material = _b64d(value)
    except (ValueError, binascii.Error):
        raise KeyManagementError(
            f"the environment variable {var}{position} is not valid base64url",
            hint=_ENV_HINT,
        ) from None
    if len(material) != _KEK_BYTES:
        raise KeyManagementError(
            f"the environment variable {var}{position} must hold 32 bytes, not {len(material)}",
            hint=_ENV_HINT,
        )
    return material


_ENV_HINT = (
    'make one with: python -c "import base64, os; '
    'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)


class EnvKeyProvider:
    """One KEK, for every purpose, from an environment variable (base64url, 32 bytes).

    Rotation is a deployment change: set a new ``RISKGUARD_KEK`` and move the old value to
    ``RISKGUARD_KEK_PREVIOUS`` (comma-separated, decrypt only), then rewrap. KEK ids are
    fingerprints, so they survive restarts. :meth:`rotate` and :meth:`destroy` refuse, and
    crypto-shredding against old backups is NOT available: the KEK lives on in your
    deployment's secret history.

    :raises KeyManagementError: unset, not base64url or not 32 bytes, naming the variable
        (never its value).
    """

    def __init__(
        self,
        var: str = "RISKGUARD_KEK",
        previous_var: str = "RISKGUARD_KEK_PREVIOUS",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(var, "").strip()
        if not raw:
            raise KeyManagementError(f"the environment variable {var} is not set", hint=_ENV_HINT)
        self.name = f"env:{var}"
        self._var = var
        current = _decode_env_kek(raw, var)
        primary_id = _fingerprint_id(current)
        self._keks: dict[str, _Kek] = {
            primary_id: _Kek(primary_id, _ANY_PURPOSE, "primary", None, current)
        }
        parts = [p.strip() for p in env.get(previous_var, "").split(",")]
        for index, part in enumerate(p for p in parts if p):
            material = _decode_env_kek(part, previous_var, f" (item {index + 1})")
            kek_id = _fingerprint_id(material)
            self._keks.setdefault(
                kek_id, _Kek(kek_id, _ANY_PURPOSE, "decrypt_only", None, material)
            )
        self._primary = self._keks[primary_id]

    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the current KEK; ``purpose`` is recorded and authenticated."""
        _check_inputs(key, context, purpose)
        header = _header(_SCHEME_LOCAL, self._primary.id, purpose)
        nonce = os.urandom(_NONCE_BYTES)
        aad = _WRAP_LABEL + header + bytes(context)
        return header + nonce + self._primary.aead().encrypt(nonce, bytes(key), aad)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key in ``wrapped``, under the current or a previous KEK.

        :raises WrappedKeyError: ``format``, ``unknown_kek`` (a KEK no longer configured)
            or ``tag``.
        """
        _check_inputs(None, context)
        blob = _parse_blob(wrapped)
        if blob.scheme != _SCHEME_LOCAL:
            raise _bad_blob("it was wrapped by a Transit provider", key_id=blob.kek_id)
        kek = self._keks.get(blob.kek_id)
        if kek is None:
            raise _bad_blob(
                f"neither {self._var} nor its previous keys hold KEK {blob.kek_id}",
                check="unknown_kek",
                key_id=blob.kek_id,
            )
        return _open_local(blob, kek, context)

    def rotate(self, purpose: str = "data") -> str:
        """Refused: rotate by changing the environment (see the class docstring)."""
        raise KeyManagementError(
            f"{self.name} cannot rotate: its KEK comes from the environment",
            key_id=self._primary.id,
            hint=f"set a new {self._var} and move the old value into the previous-keys "
            "variable (comma-separated), restart, then rewrap the data keys",
        )

    def destroy(self, kek_id: str) -> None:
        """Refused: remove the key from the environment (and its secret history) instead."""
        raise KeyManagementError(
            f"{self.name} cannot destroy KEKs; crypto-shredding against old backups "
            "needs a file or Transit provider",
            key_id=kek_id,
            hint="remove the value from the previous-keys variable and from your secret "
            "store's history",
        )

    def keks(self) -> list[KekInfo]:
        """The current KEK (primary) and the previous ones (decrypt only), purpose ``*``."""
        return [k.info() for k in self._keks.values()]


# -- Transit ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransitKeyVersions:
    """The versions of one Transit key (Vault's ``GET <mount>/keys/<name>``).

    Versions below ``min_available`` were trimmed (destroyed); ``0`` means none were.
    """

    latest: int
    min_available: int = 0
    min_decryption: int = 1
    created: Mapping[int, datetime] = field(default_factory=dict)


@runtime_checkable
class TransitClient(Protocol):
    """A KMS that keeps versioned keys and encrypts small blobs, modelled on Vault Transit.

    Implementations raise :class:`TransitError` for refusals and transport failures, must
    be thread-safe, and never put plaintext in their messages.
    """

    def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
        """Encrypt under the latest version; returns ``"vault:v<N>:<base64>"``. ``context``
        must be bound (Vault: ``associated_data``) where the service supports it."""
        ...

    def decrypt(self, key_name: str, ciphertext: str, context: bytes) -> bytes:
        """The plaintext of ``ciphertext`` (the same ``context`` as at encryption)."""
        ...

    def rotate(self, key_name: str) -> int:
        """Make a new latest version; returns its number."""
        ...

    def trim(self, key_name: str, min_available_version: int) -> None:
        """Permanently delete every version below ``min_available_version`` (Vault: raise
        ``min_decryption_version`` / ``min_encryption_version``, then ``trim``)."""
        ...

    def versions(self, key_name: str) -> TransitKeyVersions:
        """The key's version window."""
        ...


_VAULT_CT_RE = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}")
_TRANSIT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_TRANSIT_KEK_RE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,99}):v([1-9][0-9]{0,9})")


class TransitKeyProvider:
    """KEKs in a KMS or HashiCorp Vault Transit: the documented seam.

    One Transit key per purpose (``key_names``); its versions are the KEKs, with ids
    ``"<key name>:v<N>"``. The latest version is primary, older available ones decrypt
    only, trimmed ones destroyed. Every wrap and unwrap is one KMS call, so the keyring
    above caches unwrapped data keys. Vault trims from the low end only, so
    :meth:`destroy` takes the oldest remaining version first.

    :param client: a :class:`TransitClient` (:class:`VaultTransitClient`, or a test double).
    :param key_names: purpose → Transit key name.
    :param name: the provider's name (default ``"transit:<data key name>"``).
    """

    def __init__(
        self,
        client: TransitClient,
        *,
        key_names: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        names = dict(
            key_names
            if key_names is not None
            else {"data": "riskguard-data", "subject": "riskguard-subject"}
        )
        if not names:
            raise KeyManagementError("key_names is empty: map at least 'data' to a key name")
        for purpose, key_name in names.items():
            _check_purpose(purpose)
            if not isinstance(key_name, str) or not _TRANSIT_NAME_RE.fullmatch(key_name):
                raise KeyManagementError(f"invalid Transit key name {key_name!r}")
        if len(set(names.values())) != len(names):
            raise KeyManagementError("each purpose needs its own Transit key name")
        self._client = client
        self._names = names
        self._purposes = {v: k for k, v in names.items()}
        first = names.get("data", next(iter(names.values())))
        self.name = name or f"transit:{first}"

    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the latest version of the purpose's Transit key.

        :raises KeyManagementError: no Transit key for ``purpose``.
        :raises TransitError: the service failed.
        """
        _check_inputs(key, context, purpose)
        key_name = self._key_name(purpose)
        aad = _WRAP_LABEL + _header(_SCHEME_TRANSIT, key_name, purpose) + bytes(context)
        ciphertext = self._client.encrypt(key_name, hashlib.sha256(aad).digest() + bytes(key), aad)
        match = _VAULT_CT_RE.fullmatch(ciphertext) if isinstance(ciphertext, str) else None
        if match is None:
            raise TransitError(
                f"the Transit service returned a malformed ciphertext for key {key_name!r}",
                key_id=key_name,
            )
        kek_id = f"{key_name}:v{match.group(1)}"
        return _header(_SCHEME_TRANSIT, kek_id, purpose) + ciphertext.encode("ascii")

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key in ``wrapped`` (one KMS ``decrypt``; one more, ``versions``, on failure).

        :raises KekDestroyed: its version was trimmed.
        :raises WrappedKeyError: ``format``, ``unknown_kek``, ``purpose`` or ``tag``.
        """
        _check_inputs(None, context)
        blob = _parse_blob(wrapped)
        if blob.scheme != _SCHEME_TRANSIT:
            raise _bad_blob("it was wrapped by a local KEK, not by Transit", key_id=blob.kek_id)
        match = _TRANSIT_KEK_RE.fullmatch(blob.kek_id)
        if match is None or match.group(1) not in self._purposes:
            raise _bad_blob(
                f"{self.name} has no Transit key for KEK {blob.kek_id}",
                check="unknown_kek",
                key_id=blob.kek_id,
            )
        key_name, version = match.group(1), int(match.group(2))
        if self._purposes[key_name] != blob.purpose:
            raise _bad_blob(
                f"the blob says purpose {blob.purpose!r} but {key_name!r} serves "
                f"{self._purposes[key_name]!r}",
                check="purpose",
                key_id=blob.kek_id,
            )
        text = blob.body.decode("ascii", errors="replace")
        found = _VAULT_CT_RE.fullmatch(text)
        if found is None or int(found.group(1)) != version:
            raise _bad_blob("the Transit ciphertext is malformed", key_id=blob.kek_id)
        aad = _WRAP_LABEL + _header(_SCHEME_TRANSIT, key_name, blob.purpose) + bytes(context)
        try:
            plaintext = self._client.decrypt(key_name, text, aad)
        except TransitError as exc:
            raise self._explain_failure(blob.kek_id, key_name, version) from exc
        digest = hashlib.sha256(aad).digest()
        if len(plaintext) <= len(digest) or not hmac.compare_digest(
            plaintext[: len(digest)], digest
        ):
            raise _tag_error(blob.kek_id)
        return plaintext[len(digest) :]

    def rotate(self, purpose: str = "data") -> str:
        """A new version of the purpose's Transit key; returns its KEK id."""
        _check_purpose(purpose)
        key_name = self._key_name(purpose)
        kek_id = f"{key_name}:v{int(self._client.rotate(key_name))}"
        _log.info("KEK rotated: {} is the primary {!r} KEK of {}", kek_id, purpose, self.name)
        return kek_id

    def destroy(self, kek_id: str) -> None:
        """Trim ``kek_id``'s version. Only the oldest remaining version can go (Vault trims
        from the low end); the latest (primary) never. Already trimmed: nothing happens.

        :raises KeyManagementError: unknown id, the primary, or older versions remain.
        """
        match = _TRANSIT_KEK_RE.fullmatch(kek_id) if isinstance(kek_id, str) else None
        if match is None or match.group(1) not in self._purposes:
            raise KeyManagementError(f"{self.name} has no KEK {kek_id}", key_id=kek_id)
        key_name, version = match.group(1), int(match.group(2))
        info = self._client.versions(key_name)
        oldest = max(info.min_available, 1)
        if version < oldest:
            return
        if version > info.latest:
            raise KeyManagementError(f"{self.name} has no KEK {kek_id}", key_id=kek_id)
        if version == info.latest:
            purpose = self._purposes[key_name]
            raise KeyManagementError(
                f"refusing to destroy {kek_id}: it is the primary {purpose!r} KEK",
                key_id=kek_id,
                hint=f"rotate({purpose!r}) first, rewrap what it wraps, then destroy",
            )
        if version > oldest:
            raise KeyManagementError(
                f"cannot destroy {kek_id} alone: Transit trims from the oldest version, and "
                f"{key_name}:v{oldest} is still available",
                key_id=kek_id,
                hint="rewrap what the older versions wrap, then destroy them in ascending order",
            )
        self._client.trim(key_name, version + 1)
        _log.info("KEK destroyed: {} of {}", kek_id, self.name)

    def keks(self) -> list[KekInfo]:
        """Every version of every purpose's key (one ``versions`` call per purpose)."""
        out: list[KekInfo] = []
        for purpose, key_name in self._names.items():
            info = self._client.versions(key_name)
            for v in range(1, info.latest + 1):
                state: KekState = (
                    "destroyed"
                    if v < info.min_available
                    else "primary"
                    if v == info.latest
                    else "decrypt_only"
                )
                out.append(KekInfo(f"{key_name}:v{v}", purpose, state, info.created.get(v)))
        return out

    def _key_name(self, purpose: str) -> str:
        try:
            return self._names[purpose]
        except KeyError:
            raise KeyManagementError(
                f"{self.name} has no Transit key for purpose {purpose!r}",
                hint="add it to key_names",
            ) from None

    def _explain_failure(self, kek_id: str, key_name: str, version: int) -> KeyManagementError:
        try:
            info = self._client.versions(key_name)
        except TransitError:
            info = None
        if info is not None and version < info.min_available:
            return KekDestroyed(
                f"the key-encryption key {kek_id} was destroyed (trimmed): "
                "the keys wrapped under it cannot be recovered",
                key_id=kek_id,
            )
        if info is not None and version > info.latest:
            return _bad_blob(
                f"the Transit key has no version {version}", check="unknown_kek", key_id=kek_id
            )
        return _tag_error(kek_id)


def _tag_error(kek_id: str) -> WrappedKeyError:
    return WrappedKeyError(
        f"the wrapped key does not authenticate under KEK {kek_id}: the context differs "
        "(the blob belongs to another key row) or the blob was modified",
        check="tag",
        key_id=kek_id,
    )


class VaultTransitClient:
    """A :class:`TransitClient` for HashiCorp Vault (or OpenBao) Transit over HTTP, on
    ``httpx`` (the optional extra ``riskguard[vault]``). An example adapter: small,
    synchronous, one request per call.

    ==========  ==================================================================
    encrypt     ``POST /v1/<mount>/encrypt/<name>`` ``{"plaintext", "associated_data"}``
    decrypt     ``POST /v1/<mount>/decrypt/<name>`` ``{"ciphertext", "associated_data"}``
    rotate      ``POST /v1/<mount>/keys/<name>/rotate`` (then ``GET`` if the answer is 204)
    trim        ``POST …/keys/<name>/config`` ``{"min_decryption_version",
                "min_encryption_version"}`` then ``POST …/keys/<name>/trim``
                ``{"min_available_version"}``
    versions    ``GET /v1/<mount>/keys/<name>``
    ==========  ==================================================================

    Binding: ``associated_data`` needs Vault 1.13+ and an AEAD key type (``aes256-gcm96``,
    the default); ``binding="context"`` sends ``context`` instead, for keys created with
    ``derived=true``; ``"none"`` sends neither (the provider's own check still binds).
    The token's policy needs ``update`` on ``encrypt/<name>``, ``decrypt/<name>``,
    ``keys/<name>/rotate``, ``keys/<name>/config`` and ``keys/<name>/trim``, and ``read``
    on ``keys/<name>`` (trimming needs no ``deletion_allowed``).

    :param http: an ``httpx.Client`` to use (tests pass one with a ``MockTransport``).
    :raises ImportError: httpx is not installed.
    """

    def __init__(
        self,
        url: str,
        token: str,
        mount: str = "transit",
        *,
        namespace: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 5.0,
        binding: Literal["associated_data", "context", "none"] = "associated_data",
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ImportError(
                "VaultTransitClient needs httpx: pip install 'riskguard[vault]'"
            ) from exc
        self._httpx = httpx
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._base = f"{url.rstrip('/')}/v1/{mount.strip('/')}"
        self._headers = {"X-Vault-Token": token}
        if namespace:
            self._headers["X-Vault-Namespace"] = namespace
        self._binding = binding

    def __repr__(self) -> str:
        return f"VaultTransitClient({self._base!r})"  # never the token

    def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
        """``POST encrypt/<name>``; returns ``data.ciphertext``."""
        body = {"plaintext": base64.b64encode(plaintext).decode("ascii"), **self._bind(context)}
        data = self._call("POST", f"encrypt/{_q(key_name)}", "encrypt", key_name, body)
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str):
            raise TransitError("Vault's encrypt answer has no ciphertext", key_id=key_name)
        return ciphertext

    def decrypt(self, key_name: str, ciphertext: str, context: bytes) -> bytes:
        """``POST decrypt/<name>``; returns the decoded ``data.plaintext``."""
        body = {"ciphertext": ciphertext, **self._bind(context)}
        data = self._call("POST", f"decrypt/{_q(key_name)}", "decrypt", key_name, body)
        try:
            return base64.b64decode(data["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise TransitError("Vault's decrypt answer is malformed", key_id=key_name) from None

    def rotate(self, key_name: str) -> int:
        """``POST keys/<name>/rotate``; the new ``latest_version``."""
        data = self._call("POST", f"keys/{_q(key_name)}/rotate", "rotate", key_name, {})
        latest = data.get("latest_version")
        return latest if isinstance(latest, int) else self.versions(key_name).latest

    def trim(self, key_name: str, min_available_version: int) -> None:
        """Raise the minimum versions (never lowering them), then trim."""
        current = self._call("GET", f"keys/{_q(key_name)}", "read", key_name)
        config = {
            "min_decryption_version": max(
                int(current.get("min_decryption_version") or 0), min_available_version
            ),
            "min_encryption_version": max(
                int(current.get("min_encryption_version") or 0), min_available_version
            ),
        }
        self._call("POST", f"keys/{_q(key_name)}/config", "config", key_name, config)
        body = {"min_available_version": min_available_version}
        self._call("POST", f"keys/{_q(key_name)}/trim", "trim", key_name, body)

    def versions(self, key_name: str) -> TransitKeyVersions:
        """``GET keys/<name>``: ``latest_version``, ``min_available_version``, ``keys``."""
        data = self._call("GET", f"keys/{_q(key_name)}", "read", key_name)
        try:
            created = {int(v): _vault_time(t) for v, t in dict(data.get("keys") or {}).items()}
            return TransitKeyVersions(
                latest=int(data["latest_version"]),
                min_available=int(data.get("min_available_version") or 0),
                min_decryption=int(data.get("min_decryption_version") or 1),
                created=created,
            )
        except (KeyError, TypeError, ValueError):
            raise TransitError("Vault's key answer is malformed", key_id=key_name) from None

    def _bind(self, context: bytes) -> dict[str, str]:
        if self._binding == "none":
            return {}
        return {self._binding: base64.b64encode(context).decode("ascii")}

    def _call(
        self,
        method: str,
        path: str,
        op: str,
        key_name: str,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.request(
                method, f"{self._base}/{path}", json=body, headers=self._headers
            )
        except self._httpx.HTTPError as exc:
            raise TransitError(
                f"cannot reach Vault for {op} on key {key_name!r}: {type(exc).__name__}",
                key_id=key_name,
                hint=f"check the Vault address {self._base} and the network",
            ) from exc
        if response.status_code == 204:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            detail = "; ".join(str(e) for e in errors)[:300] if errors else response.reason_phrase
            raise TransitError(
                f"Vault Transit {op} on key {key_name!r} failed: HTTP {response.status_code}: "
                f"{detail}",
                key_id=key_name,
            )
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise TransitError(f"Vault's {op} answer has no data", key_id=key_name)
        return data


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _vault_time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, dict):
        value = value.get("creation_time")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


# -- settings -----------------------------------------------------------------------------


def provider_from_settings(
    settings: Settings, *, environ: Mapping[str, str] | None = None
) -> KeyProvider:
    """The provider ``[keys]`` asks for: ``file`` (``keyring_path``, passphrase from
    ``passphrase_env``), ``env`` (``kek_env`` and ``<kek_env>_PREVIOUS``) or ``memory``.

    :raises KeyManagementError: as the chosen provider's constructor.
    """
    keys = settings.keys
    if keys.provider == "file":
        return FileKeyProvider.from_env(
            settings.resolve(keys.keyring_path), keys.passphrase_env, environ=environ
        )
    if keys.provider == "env":
        return EnvKeyProvider(keys.kek_env, f"{keys.kek_env}_PREVIOUS", environ=environ)
    return MemoryKeyProvider()
