"""Key-encryption keys (KEKs) behind one :class:`KeyProvider` Protocol, and the data-key wrap.

riskguard's data keys (DEKs) live in its own tables, *wrapped* (encrypted) under a KEK that
never touches the database. A provider holds the KEKs and does two things with them: wrap a
key under the primary KEK of a purpose (``"data"`` for field and blind-index keys,
``"subject"`` for per-subject keys) and unwrap a blob, which names its KEK, so the lookup is
O(1) and nothing is decrypted on trial.

Providers
=========

===========================  ================  ==========================================
:class:`MemoryKeyProvider`   :mod:`._local`    in memory, every operation; the test double
                                               and the demo
:class:`FileKeyProvider`     :mod:`._keyfile`  an encrypted keyring file (scrypt
                                               passphrase, AES-256-GCM)
:class:`EnvKeyProvider`      :mod:`._envkey`   one KEK in ``$RISKGUARD_KEK`` (older ones
                                               decrypt only)
:class:`TransitKeyProvider`  :mod:`._transit`  a KMS / Vault Transit through a
                                               :class:`TransitClient`
===========================  ================  ==========================================

:func:`provider_from_settings` builds the one ``[keys]`` in ``riskguard.toml`` asks for.

This module is the facade: it holds the Protocol and :func:`provider_from_settings` and
re-exports the providers and the shared pieces, which live in :mod:`._kek` (the errors,
:class:`KekInfo` and the wrapped-key format, documented byte by byte there). Those sit in a
module of their own, below the providers, so that the imports form a tree: ``_kek`` <-
``_local`` <- ``_keyfile`` / ``_envkey``, ``_kek`` <- ``_transit``, and all of them <- this
module. No module imports one that imports it back, so any of them can be imported first.
The keyring file format is documented in :mod:`._keyfile`.

Crypto-shredding and backups. Destroying a KEK erases its material, so every key wrapped
under it is gone, *including the copies in old database backups*. That only holds while no
copy of the KEK survives elsewhere: a backup of the keyring file made before the destroy
still holds it, so keep keyring backups apart from database backups and expire them.
:class:`EnvKeyProvider` cannot destroy anything (the key lives in your deployment's
secrets), so crypto-shredding against old backups is not available with it. Transit trims
key versions from the low end only, so its KEKs are destroyed in ascending order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from riskguard.crypto._envkey import EnvKeyProvider
from riskguard.crypto._kek import (
    KekDestroyed,
    KekInfo,
    KekState,
    TransitError,
    WrappedKeyError,
    wrapped_kek_id,
)
from riskguard.crypto._keyfile import DEFAULT_SCRYPT_N, MIN_SCRYPT_N, FileKeyProvider
from riskguard.crypto._local import MemoryKeyProvider
from riskguard.crypto._transit import (
    TransitClient,
    TransitKeyProvider,
    TransitKeyVersions,
    VaultTransitClient,
)

if TYPE_CHECKING:
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


# -- the Protocol -------------------------------------------------------------------------


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
