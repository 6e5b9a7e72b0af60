"""The encrypted keyring file: :class:`FileKeyProvider` and its helpers (the scrypt KDF,
the atomic write and the ``flock`` that serialises writers).

:class:`FileKeyProvider` is the :class:`~riskguard.crypto._local._Keyring` of
:mod:`._local` persisted to one file; the keys it wraps use scheme 0x01 of the wrapped-key
format (:mod:`._kek`).

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

import binascii
import json
import os
import secrets
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from loguru import logger

from riskguard.crypto._kek import (
    _KEK_BYTES,
    _KEK_ID_RE,
    _NONCE_BYTES,
    _PURPOSE_RE,
    _TAG_BYTES,
    _b64d,
    _b64e,
    _check_purpose,
    _utcnow,
)
from riskguard.crypto._local import (
    _DEFAULT_PURPOSES,
    _erase_dropped,
    _Kek,
    _Keyring,
    _ordered,
)
from riskguard.errors import KeyManagementError

__all__ = ["DEFAULT_SCRYPT_N", "MIN_SCRYPT_N", "FileKeyProvider"]

_log = logger.bind(component="crypto")

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
