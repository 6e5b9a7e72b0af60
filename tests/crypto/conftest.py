"""Fixtures for the crypto tests: a keyring on each SQL engine, a recording audit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from riskguard.crypto import FieldCrypto, Keyring, MemoryKeyProvider
from tests.conftest import SqlNamespace
from tests.doubles import RecordingAudit


@dataclass
class CryptoEnv:
    """A FieldCrypto on one SQL namespace with its provider, keyring and audit."""

    ns: SqlNamespace
    provider: MemoryKeyProvider
    keyring: Keyring
    crypto: FieldCrypto
    audit: RecordingAudit

    def fresh(self) -> FieldCrypto:
        """Another FieldCrypto on the same tables and KEKs (as another process makes)."""
        keyring = Keyring(self.ns.engine, self.provider, audit=self.audit, cache_ttl_s=0)
        return FieldCrypto(keyring)


@pytest.fixture
def crypto_env(sql_schema: SqlNamespace) -> CryptoEnv:
    """A keyring with a memory KEK on each SQL engine (schema created)."""
    audit = RecordingAudit()
    provider = MemoryKeyProvider()
    keyring = Keyring(sql_schema.engine, provider, audit=audit)
    return CryptoEnv(sql_schema, provider, keyring, FieldCrypto(keyring), audit)
