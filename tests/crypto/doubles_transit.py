"""A Vault-Transit-like KMS in memory: the test double for :class:`TransitClient`.

:class:`FakeTransit` keeps versioned AES-256-GCM keys with Vault's rules (latest version
encrypts; ``min_decryption_version`` / ``min_encryption_version``; ``trim`` deletes versions
below ``min_available_version`` and may not pass either minimum) and counts every call in
:attr:`FakeTransit.calls`, so tests can assert that nothing reaches the KMS on a hot path.
The lower-level :meth:`configure`, :meth:`trim_only` and :meth:`read` back the Vault HTTP
emulation in ``test_providers.py``.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from riskguard.crypto._providers import TransitError, TransitKeyVersions

_CT_RE = re.compile(r"vault:v(\d+):([A-Za-z0-9+/=]+)")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class _Key:
    def __init__(self) -> None:
        self.versions: dict[int, bytes] = {}
        self.created: dict[int, datetime] = {}
        self.latest = 0
        self.min_decryption = 1
        self.min_encryption = 0
        self.min_available = 0


class FakeTransit:
    """An in-memory :class:`TransitClient`.

    :param keys: key names that exist from the start (version 1 each); others are created
        on first :meth:`encrypt` (Vault's upsert) unless ``upsert=False``.
    :param bind_context: bind ``context`` as AEAD associated data (Vault's
        ``associated_data``); ``False`` ignores it, as a KMS without AAD would.
    """

    def __init__(
        self,
        keys: Iterable[str] = ("riskguard-data", "riskguard-subject"),
        *,
        bind_context: bool = True,
        upsert: bool = True,
    ) -> None:
        self.calls: Counter[str] = Counter()
        self.bind_context = bind_context
        self.upsert = upsert
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()
        for name in keys:
            self._create(name)

    # -- TransitClient ------------------------------------------------------------------
    def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
        with self._lock:
            self.calls["encrypt"] += 1
            key = self._key(key_name, create=self.upsert)
            version = key.latest
            nonce = os.urandom(12)
            sealed = AESGCM(key.versions[version]).encrypt(nonce, plaintext, self._aad(context))
            return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, key_name: str, ciphertext: str, context: bytes) -> bytes:
        with self._lock:
            self.calls["decrypt"] += 1
            key = self._key(key_name)
            match = _CT_RE.fullmatch(ciphertext)
            if match is None:
                raise TransitError("invalid ciphertext: no prefix", key_id=key_name)
            version = int(match.group(1))
            if version > key.latest:
                raise TransitError("invalid key version", key_id=key_name)
            if version < key.min_decryption or version not in key.versions:
                raise TransitError(
                    "ciphertext or signature version is disallowed by policy (too old)",
                    key_id=key_name,
                )
            raw = base64.b64decode(match.group(2))
            try:
                return AESGCM(key.versions[version]).decrypt(raw[:12], raw[12:], self._aad(context))
            except InvalidTag:
                raise TransitError(
                    "cipher: message authentication failed", key_id=key_name
                ) from None

    def rotate(self, key_name: str) -> int:
        with self._lock:
            self.calls["rotate"] += 1
            key = self._key(key_name)
            self._add_version(key)
            return key.latest

    def trim(self, key_name: str, min_available_version: int) -> None:
        with self._lock:
            self.calls["trim"] += 1
            key = self._key(key_name)
            self._configure(
                key,
                max(key.min_decryption, min_available_version),
                max(key.min_encryption, min_available_version),
            )
            self._trim(key, min_available_version)

    def versions(self, key_name: str) -> TransitKeyVersions:
        with self._lock:
            self.calls["versions"] += 1
            key = self._key(key_name)
            return TransitKeyVersions(
                latest=key.latest,
                min_available=key.min_available,
                min_decryption=key.min_decryption,
                created=dict(key.created),
            )

    # -- Vault's finer-grained endpoints (for the HTTP emulation) ------------------------
    def configure(self, key_name: str, min_decryption: int, min_encryption: int) -> None:
        """``POST keys/<name>/config``."""
        with self._lock:
            self._configure(self._key(key_name), min_decryption, min_encryption)

    def trim_only(self, key_name: str, min_available_version: int) -> None:
        """``POST keys/<name>/trim`` with Vault's checks."""
        with self._lock:
            self._trim(self._key(key_name), min_available_version)

    def read(self, key_name: str) -> dict[str, Any]:
        """``GET keys/<name>``'s ``data``, as Vault shapes it (unix creation times)."""
        with self._lock:
            key = self._key(key_name)
            return {
                "name": key_name,
                "type": "aes256-gcm96",
                "derived": False,
                "deletion_allowed": False,
                "keys": {str(v): int(t.timestamp()) for v, t in key.created.items()},
                "latest_version": key.latest,
                "min_available_version": key.min_available,
                "min_decryption_version": key.min_decryption,
                "min_encryption_version": key.min_encryption,
                "supports_encryption": True,
            }

    def has_material(self, key_name: str, version: int) -> bool:
        """Whether a version's key still exists (trim deletes it)."""
        with self._lock:
            return version in self._key(key_name).versions

    # -- internals ------------------------------------------------------------------------
    def _aad(self, context: bytes) -> bytes | None:
        return bytes(context) if self.bind_context else None

    def _create(self, name: str) -> _Key:
        key = _Key()
        self._add_version(key)
        self._keys[name] = key
        return key

    def _add_version(self, key: _Key) -> None:
        key.latest += 1
        key.versions[key.latest] = os.urandom(32)
        key.created[key.latest] = _EPOCH + timedelta(days=key.latest)

    def _key(self, name: str, *, create: bool = False) -> _Key:
        if name not in self._keys:
            if not create:
                raise TransitError("encryption key not found", key_id=name)
            return self._create(name)
        return self._keys[name]

    @staticmethod
    def _configure(key: _Key, min_decryption: int, min_encryption: int) -> None:
        if min_decryption > key.latest or min_encryption > key.latest:
            raise TransitError("cannot set min version greater than latest version")
        if min_decryption < key.min_available:
            raise TransitError("min decryption version should not be less than min available")
        key.min_decryption = max(min_decryption, 1)
        key.min_encryption = min_encryption

    @staticmethod
    def _trim(key: _Key, min_available: int) -> None:
        if min_available < key.min_available:
            raise TransitError("minimum available version cannot be decremented")
        if key.min_encryption == 0:
            raise TransitError("minimum available version cannot be set when minimum "
                               "encryption version is not set")  # fmt: skip
        if min_available > key.min_encryption or min_available > key.min_decryption:
            raise TransitError("minimum available version cannot be greater than minimum "
                               "encryption or decryption version")  # fmt: skip
        if min_available <= 0:
            raise TransitError("minimum available version should be positive")
        key.min_available = min_available
        for version in [v for v in key.versions if v < min_available]:
            del key.versions[version]
            del key.created[version]
