"""Rewrap and restore edge cases: many versions (MariaDB's case-insensitive collation),
a row changed during rewrap, restoring a backup together with a newer key export."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from riskguard.crypto import (
    EncryptedString,
    FieldCrypto,
    export_keys,
    import_keys,
    rewrap_column,
    versions_in_use,
)
from riskguard.crypto._tables import key_table, keyset_table
from riskguard.errors import DecryptionError, KeyManagementError
from tests.crypto.conftest import CryptoEnv


def _table(crypto: FieldCrypto) -> sa.Table:
    md = sa.MetaData()
    return sa.Table(
        "rw_item",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("secret", EncryptedString(crypto, length=16)),
    )


def test_version_27_is_not_version_1(crypto_env: CryptoEnv) -> None:
    """Base64url prefixes of versions 1 and 27 differ only in case (…AAAB vs …AAAb): the
    counts and the rewrap must tell them apart on every engine."""
    engine = crypto_env.ns.engine
    t = _table(crypto_env.crypto)
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "secret": f"v1-{i}"} for i in range(3)])
    name = "field:rw_item.secret"
    for _ in range(26):
        crypto_env.keyring.rotate(name)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "secret": f"v27-{i}"} for i in range(3, 5)])
    ks = crypto_env.keyring.describe(name).id
    assert versions_in_use(engine, t, "secret") == {(ks, 1): 3, (ks, 27): 2}
    report = rewrap_column(engine, t, "secret")
    assert report.rewrapped == 3 and report.remaining == {(ks, 27): 5}
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(t.c.secret)).scalars()) == [
            "v1-0", "v1-1", "v1-2", "v27-3", "v27-4"
        ]  # fmt: skip


def test_rewrap_skips_damaged_rows_and_reports_them(crypto_env: CryptoEnv) -> None:
    engine = crypto_env.ns.engine
    t = _table(crypto_env.crypto)
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i, "secret": f"s{i}"} for i in range(4)])
        raw = sa.type_coerce(t.c.secret, sa.Text)
        good = conn.execute(sa.select(raw).where(t.c.id == 0)).scalar_one()
        # Row 3 holds row 0's ciphertext with its last character changed: a damaged value.
        bad = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
        conn.execute(t.update().where(t.c.id == 3).values(secret=sa.literal(bad)))
    crypto_env.keyring.rotate("field:rw_item.secret")
    report = rewrap_column(engine, t, "secret", batch_size=2)
    assert (report.rewrapped, report.failed, report.failed_rows) == (3, 1, ["3"])
    assert not report.done  # the damaged row keeps version 1 from being retired


def test_restore_never_brings_back_a_destroyed_version(crypto_env: CryptoEnv) -> None:
    """Database backup taken while v1 was primary; then v1 is rotated away, retired and
    destroyed; the backup's key tables are restored and the newest export imported on
    top: v1 stays destroyed and v2 is the primary."""
    kr = crypto_env.keyring
    engine = crypto_env.ns.engine
    f = crypto_env.crypto.field("customer", "phone")
    old = f.encrypt(b"old")
    with engine.connect() as conn:
        backup_sets = [dict(r) for r in conn.execute(sa.select(keyset_table)).mappings()]
        backup_keys = [dict(r) for r in conn.execute(sa.select(key_table)).mappings()]
    name = "field:customer.phone"
    kr.rotate(name)
    info = kr.describe(name)
    kr.retire(name, 1, remaining=0, now=info.rotated_at + kr.cache_ttl_s)
    kr.destroy(name, 1)
    new = f.encrypt(b"new")
    data = export_keys(kr, "a long export passphrase", scrypt_n=2**14)
    with engine.begin() as conn:  # restore the old backup of the key tables
        conn.execute(key_table.delete())
        conn.execute(keyset_table.delete())
        conn.execute(keyset_table.insert(), backup_sets)
        conn.execute(key_table.insert(), backup_keys)
    counts = import_keys(kr, data, "a long export passphrase")
    assert counts["states_advanced"] == 1 and counts["keysets_merged"] >= 1
    after = {v.version: v.state for v in kr.describe(name).versions}
    assert after == {1: "destroyed", 2: "primary"}
    assert kr.describe(name).primary_version == 2
    assert f.decrypt(new) == b"new"
    with pytest.raises(DecryptionError, match="destroyed"):
        f.decrypt(old)
    from riskguard.crypto._format import parse

    assert parse(crypto_env.fresh().field("customer", "phone").encrypt(b"x")).version == 2


def test_export_parameters_and_passphrases_are_checked(crypto_env: CryptoEnv) -> None:
    kr = crypto_env.keyring
    crypto_env.crypto.field("a", "b").encrypt(b"x")
    crypto_env.crypto.field("c", "d").encrypt(b"y")  # two keys, to swap below
    with pytest.raises(KeyManagementError, match="shorter than 12"):
        export_keys(kr, "short", scrypt_n=2**14)
    data = json.loads(export_keys(kr, "a long export passphrase", scrypt_n=2**14))
    for field, value in (("r", 0), ("p", 10_000), ("n", 2**30), ("r", True)):
        doc: dict[str, Any] = json.loads(json.dumps(data))
        doc["kdf"][field] = value
        with pytest.raises(KeyManagementError, match="out of range"):
            import_keys(kr, json.dumps(doc).encode(), "a long export passphrase")
    doc = json.loads(json.dumps(data))
    doc["version"] = 2
    with pytest.raises(KeyManagementError, match="version 2"):
        import_keys(kr, json.dumps(doc).encode(), "a long export passphrase")
    doc = json.loads(json.dumps(data))
    doc["keys"][0]["key"], doc["keys"][-1]["key"] = doc["keys"][-1]["key"], doc["keys"][0]["key"]
    with pytest.raises(KeyManagementError, match="modified"):
        import_keys(kr, json.dumps(doc).encode(), "a long export passphrase")
