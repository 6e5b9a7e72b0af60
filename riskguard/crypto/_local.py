"""Local KEKs, whose material is held in this process, and the in-memory provider.

:class:`_Kek` is one KEK: id, purpose, state, times, and material that a destroy
overwrites. :func:`_open_local` unwraps a scheme-0x01 blob (the wrapped-key format in
:mod:`._kek`) under one. :class:`_Keyring` is the base of the memory and file providers:
KEKs by id, one primary per purpose, a lock around all, every change made on a copy and
persisted before it becomes live. :class:`MemoryKeyProvider` is that base with nothing
persisted: the test double and the demo. :class:`~riskguard.crypto.FileKeyProvider`
(:mod:`._keyfile`) persists the same base to a file;
:class:`~riskguard.crypto.EnvKeyProvider` (:mod:`._envkey`) uses :class:`_Kek` and
:func:`_open_local` without the base, as its KEKs never change.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from loguru import logger

from riskguard.crypto._kek import (
    _KEK_BYTES,
    _NONCE_BYTES,
    _SCHEME_LOCAL,
    _TAG_BYTES,
    _WRAP_LABEL,
    KekDestroyed,
    KekInfo,
    KekState,
    WrappedKeyError,
    _bad_blob,
    _Blob,
    _check_inputs,
    _check_purpose,
    _fingerprint_id,
    _header,
    _parse_blob,
    _utcnow,
)
from riskguard.errors import KeyManagementError

__all__ = ["MemoryKeyProvider"]

_log = logger.bind(component="crypto")
_T = TypeVar("_T")

_DEFAULT_PURPOSES = ("data", "subject")
_ANY_PURPOSE = "*"


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
