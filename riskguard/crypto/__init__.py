"""Field-level encryption of personal data.

- **Keyring** (:class:`Keyring`): data keys (AES-256) per keyset — ``field:<table>.<column>``,
  ``subject:<id>`` (one per data subject), ``index:blind`` (blind-index roots) — wrapped by
  the key-encryption key of a :class:`KeyProvider` (an encrypted keyring file, the
  environment, a KMS / Vault Transit) and stored in ``rg_crypto_*``. Versions are staged,
  promoted, retired and destroyed; unwrapped keys are cached, so no provider call happens on
  the hot path.
- **Field cipher** (:class:`FieldCipher`): AES-256-GCM with a self-describing envelope
  (format, keyset id, version, context check, nonce) and associated data binding each value
  to its table, column, row and subject; ``pii_reads()`` audits one ``pii.read`` per request.
- **SQLAlchemy** (:class:`EncryptedString`, :class:`EncryptedJSON`, :class:`EncryptedBytes`):
  column types for Core and the ORM with blind-index companions searched by
  ``Column.blind_eq(value)``.
- **Blind indexes** (:class:`BlindIndex`, :class:`CompoundIndex`, :func:`plan_bits`):
  HMAC-SHA256 over normalised values (phones to E.164, resident ID numbers checked),
  truncated to the planner's size.
- **Rotation** (:func:`rewrap_column`), **crypto-shredding** (:meth:`FieldCrypto.shred`),
  **backup** (:func:`export_keys`, :func:`import_keys`), **masking** (:class:`MaskPolicy`),
  **sealed boxes** (:class:`SealingKeyPair`, HPKE).

::

    crypto = guard.crypto
    phone = crypto.field("customer", "phone")
    token = phone.encrypt_text("+8613800138000")
    phone.decrypt_text(token)
"""

from __future__ import annotations

from riskguard.crypto._backup import export_keys, import_keys
from riskguard.crypto._blind import BlindIndex, CompoundIndex, derive_index_key
from riskguard.crypto._cipher import FieldCipher, FieldKey, PiiReads
from riskguard.crypto._crypto import INDEX_KEYSET, FieldCrypto, SubjectErasure
from riskguard.crypto._format import decode_text, encode_text
from riskguard.crypto._keyring import (
    DataKey,
    Keyring,
    KeysetInfo,
    KeyVersionInfo,
    ShredReport,
)
from riskguard.crypto._mask import MaskPolicy, mask_address, mask_cn_id, mask_phone
from riskguard.crypto._normalise import (
    get_normaliser,
    normalise_address,
    normalise_cn_id,
    normalise_phone,
)
from riskguard.crypto._planner import IndexPlan, UnsafeBlindIndexWarning, plan_bits
from riskguard.crypto._providers import (
    EnvKeyProvider,
    FileKeyProvider,
    KekDestroyed,
    KekInfo,
    KeyProvider,
    MemoryKeyProvider,
    TransitClient,
    TransitError,
    TransitKeyProvider,
    VaultTransitClient,
    WrappedKeyError,
    provider_from_settings,
    wrapped_kek_id,
)
from riskguard.crypto._rewrap import (
    RebuildReport,
    RewrapReport,
    encrypted_columns,
    index_rebuilt_version,
    rebuild_blind_index,
    rewrap_column,
    versions_in_use,
)
from riskguard.crypto._sealed import SealingKeyPair, SealingPublicKey
from riskguard.crypto._sqla import (
    BlindIndexSpec,
    EncryptedBytes,
    EncryptedJSON,
    EncryptedString,
    Erased,
    Prepared,
    Sealed,
)

__all__ = [
    "INDEX_KEYSET",
    "BlindIndex",
    "BlindIndexSpec",
    "CompoundIndex",
    "DataKey",
    "EncryptedBytes",
    "EncryptedJSON",
    "EncryptedString",
    "EnvKeyProvider",
    "Erased",
    "FieldCipher",
    "FieldCrypto",
    "FieldKey",
    "FileKeyProvider",
    "IndexPlan",
    "KekDestroyed",
    "KekInfo",
    "KeyProvider",
    "KeyVersionInfo",
    "Keyring",
    "KeysetInfo",
    "MaskPolicy",
    "MemoryKeyProvider",
    "PiiReads",
    "Prepared",
    "RebuildReport",
    "RewrapReport",
    "Sealed",
    "SealingKeyPair",
    "SealingPublicKey",
    "ShredReport",
    "SubjectErasure",
    "TransitClient",
    "TransitError",
    "TransitKeyProvider",
    "UnsafeBlindIndexWarning",
    "VaultTransitClient",
    "WrappedKeyError",
    "decode_text",
    "derive_index_key",
    "encode_text",
    "encrypted_columns",
    "export_keys",
    "get_normaliser",
    "import_keys",
    "index_rebuilt_version",
    "mask_address",
    "mask_cn_id",
    "mask_phone",
    "normalise_address",
    "normalise_cn_id",
    "normalise_phone",
    "plan_bits",
    "provider_from_settings",
    "rebuild_blind_index",
    "rewrap_column",
    "versions_in_use",
    "wrapped_kek_id",
]
