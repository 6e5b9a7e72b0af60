"""The issue's drills: rotation with a rewrap killed half-way, crypto-shredding against a
backup taken before the shred, and key backup / restore."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from riskguard import db
from riskguard.audit import AuditLog, SqlStore
from riskguard.crypto import (
    BlindIndexSpec,
    EncryptedString,
    FieldCrypto,
    FileKeyProvider,
    KekDestroyed,
    Keyring,
    Sealed,
    export_keys,
    import_keys,
    rewrap_column,
    versions_in_use,
)
from riskguard.crypto._tables import key_table, keyset_table
from riskguard.errors import DecryptionError, KeyManagementError, ShreddedError
from tests.conftest import SqlNamespace
from tests.crypto.conftest import CryptoEnv
from tests.crypto.drill_app import CACHE_TTL_S, PASSPHRASE, make_table, open_crypto

ROOT = Path(__file__).resolve().parents[2]


def _phone(i: int) -> str:
    return f"1{3 + i % 7}{i:09d}"


@pytest.mark.slow
def test_rotation_drill(sql: SqlNamespace, tmp_path: Path) -> None:
    """Rotate, SIGKILL the rewrap half-way, resume: every row on the new version, the old
    one retirable, and reads work at every step (100k rows on SQLite, 20k on the servers)."""
    n = 100_000 if sql.kind == "sqlite" else 20_000
    batch = 1000
    keyring_path = tmp_path / "keyring.json"
    FileKeyProvider.create(keyring_path, PASSPHRASE, scrypt_n=2**14)
    engine, crypto = open_crypto(sql.url, str(keyring_path))
    db.create_schema(engine)
    table = make_table(crypto)
    table.metadata.create_all(engine)
    rows = [crypto.prepare(table, {"id": i, "phone": _phone(i)}) for i in range(1, n + 1)]
    with engine.begin() as conn:
        for k in range(0, n, 5000):
            conn.execute(table.insert(), rows[k : k + 5000])
    rng = random.Random(7)

    def check_sample(k: int = 50) -> None:
        ids = rng.sample(range(1, n + 1), k)
        with engine.connect() as conn:
            got = conn.execute(sa.select(table).where(table.c.id.in_(ids))).mappings().all()
        assert {r["id"]: crypto.reveal(table, r)["phone"] for r in got} == {
            i: _phone(i) for i in ids
        }

    check_sample()
    name = "field:drill_customer.phone"
    assert crypto.keyring.rotate(name) == 2
    ks = crypto.keyring.describe(name).id
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crypto.drill_app", sql.url, str(keyring_path), str(batch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    killed_at = 0
    deadline = time.monotonic() + 300
    for line in child.stdout:
        if line.strip() == "finished":
            break
        killed_at = int(line)
        check_sample(5)  # reads keep working while the rewrap runs
        if killed_at >= n // 2:
            child.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the rewrap child made no progress"
    child.wait(timeout=60)
    child.stdout.close()
    assert child.stderr is not None
    err = child.stderr.read()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL, err
    mid = versions_in_use(engine, table, "phone")
    assert mid[(ks, 2)] >= killed_at and mid[(ks, 1)] > 0, mid
    assert mid[(ks, 2)] % batch == 0  # batches land whole
    check_sample()
    with pytest.raises(KeyManagementError, match="still encrypted"):
        crypto.keyring.retire(name, 1, remaining=mid[(ks, 1)])
    report = rewrap_column(engine, table, "phone", batch_size=batch)
    assert report.done and report.failed == 0
    assert report.remaining == {(ks, 2): n}
    assert report.rewrapped == mid[(ks, 1)]
    crypto.keyring.retire(
        name, 1, remaining=report.remaining.get((ks, 1), 0), now=time.time() + CACHE_TTL_S
    )
    fresh = FieldCrypto(Keyring(engine, FileKeyProvider.open(keyring_path, PASSPHRASE)))
    fresh_table = make_table(fresh)
    with engine.connect() as conn:
        every = conn.execute(sa.select(fresh_table)).mappings().all()
    assert len(every) == n
    assert all(fresh.reveal(fresh_table, r)["phone"] == _phone(r["id"]) for r in every)
    engine.dispose()


def _subject_table(crypto: FieldCrypto) -> sa.Table:
    md = sa.MetaData()
    return sa.Table(
        "shred_customer",
        md,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "phone",
            EncryptedString(
                crypto,
                length=20,
                per_row=True,
                subject="id",
                blind_index=BlindIndexSpec("phone_bidx", "phone", bits=16),
            ),
        ),
        sa.Column("phone_bidx", sa.String(4)),
        sa.Column("address", EncryptedString(crypto, per_row=True, subject="id")),
    )


def _dump(engine: sa.Engine, tables: list[sa.Table]) -> dict[str, list[dict[str, Any]]]:
    """A "backup": every row of the tables, as stored."""
    out = {}
    with engine.connect() as conn:
        for t in tables:
            raw = [sa.type_coerce(c, sa.LargeBinary if isinstance(c.type, sa.LargeBinary)
                                  else c.type.impl if hasattr(c.type, "impl") else c.type)
                   .label(c.name) for c in t.columns]  # fmt: skip
            out[t.name] = [dict(r) for r in conn.execute(sa.select(*raw)).mappings()]
    return out


def test_shred_drill(crypto_env: CryptoEnv, tmp_path: Path) -> None:
    """After shred(A): nothing of A's is recoverable from the database or from a backup
    taken before the shred, B is untouched, and the audit log still verifies."""
    engine = crypto_env.ns.engine
    audit = AuditLog(SqlStore(engine, "drill"))
    crypto_env.keyring.audit = audit
    crypto = FieldCrypto(crypto_env.keyring)
    t = _subject_table(crypto)
    t.metadata.create_all(engine)
    a, b = "user-A", "user-B"
    # Encrypt before opening the write transaction: on SQLite the keyring creates the
    # subjects' keys in transactions of its own, which would wait on ours.
    values = [
        crypto.prepare(t, {"id": sid, "phone": phone, "address": addr})
        for sid, phone, addr in (
            (a, "13800138000", "北京市朝阳区建国路88号"),
            (b, "13912345678", "上海市浦东新区世纪大道1号"),
        )
    ]
    with engine.begin() as conn:
        conn.execute(t.insert(), values)
    backup = _dump(engine, [keyset_table, key_table, t])
    old_index = next(r["phone_bidx"] for r in backup[t.name] if r["id"] == a)
    assert old_index is not None
    a_key_rows = [r for r in backup["rg_crypto_key"] if r["wrapped"] is not None]
    export_before = export_keys(crypto_env.keyring, "pass phrase one", scrypt_n=2**14)

    result = crypto.shred(a, tables=[t], engine=engine)
    assert result.key.backups_protected and result.indexes_cleared == {
        "shred_customer.phone_bidx": 1
    }

    # The live database: A's key bytes are gone, their index is NULL, reads raise.
    with engine.connect() as conn:
        ks_a = conn.execute(
            sa.select(keyset_table.c.id).where(keyset_table.c.name == f"subject:{a}")
        ).scalar_one()
        assert conn.execute(
            sa.select(key_table.c.wrapped).where(key_table.c.keyset_id == ks_a)
        ).scalars().all() == [None]
        row_a = conn.execute(sa.select(t).where(t.c.id == a)).mappings().one()
        row_b = conn.execute(sa.select(t).where(t.c.id == b)).mappings().one()
    assert row_a["phone_bidx"] is None
    with pytest.raises(ShreddedError):
        crypto.reveal(t, row_a)
    assert crypto.reveal(t, row_b)["phone"] == "13912345678"
    live = json.dumps(_dump(engine, [t]), default=repr, ensure_ascii=False)
    for secret in ("13800138000", "8613800138000", "建国路"):
        assert secret not in live

    # The backup taken before: A's wrapped key was wrapped under a KEK that is destroyed.
    for r in a_key_rows:
        if r["keyset_id"] == ks_a:
            with pytest.raises(KekDestroyed):
                crypto_env.provider.unwrap(
                    r["wrapped"], context=b"riskguard/dek/1:%d:%d" % (ks_a, r["version"])
                )
    # Restoring it the documented way (data from the backup, keys from the newest key
    # export) reads B and not A.
    restored = db.create_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    db.create_schema(restored)
    t.metadata.create_all(restored)
    with restored.begin() as conn:
        conn.execute(sa.insert(sa.table(t.name, *[sa.column(c.name) for c in t.columns])),
                     backup[t.name])  # fmt: skip
    kr2 = Keyring(restored, crypto_env.provider)
    import_keys(kr2, export_keys(crypto_env.keyring, "pass phrase two", scrypt_n=2**14),
                "pass phrase two")  # fmt: skip
    c2 = FieldCrypto(kr2)
    t2 = _subject_table(c2)
    with restored.connect() as conn:
        old_a = conn.execute(sa.select(t2).where(t2.c.id == a)).mappings().one()
        old_b = conn.execute(sa.select(t2).where(t2.c.id == b)).mappings().one()
    assert isinstance(old_a["phone"], Sealed)
    with pytest.raises(ShreddedError):
        c2.reveal(t2, old_a)
    assert c2.reveal(t2, old_b)["address"] == "上海市浦东新区世纪大道1号"
    # …and an export taken *before* the shred cannot resurrect A over the tombstone.
    counts = import_keys(kr2, export_before, "pass phrase one")
    assert counts["keys_added"] == 0
    kr2.invalidate()
    with pytest.raises(ShreddedError):
        c2.reveal(t2, old_a)
    restored.dispose()

    # The old backup's 16-bit blind index does not single A's phone out: many valid phone
    # numbers share it (the planner keeps at least 2 coincidences per value).
    bi = crypto.index(t.name, "phone", "phone_bidx", "phone", 16)
    rng = random.Random(1)
    # 1M candidates over 2^16 values: ~15 expected per value (P(fewer than 2) ~ 1e-5).
    hits = sum(
        bi.compute_normalised(f"+8613{rng.randrange(10**9):09d}") == old_index
        for _ in range(1_000_000)
    )
    assert hits >= 2

    report = audit.verify()
    assert report.ok, report
    assert "key.shred" in [e.action for e in audit.tail(50)]


def test_restore_drill(crypto_env: CryptoEnv) -> None:
    """Export, wipe, import, decrypt everything; a wrong passphrase or an edited export
    imports nothing."""
    c = crypto_env.crypto
    plain = c.field("customer", "phone")
    subj = c.field("customer", "address", per_subject=True)
    blobs = [plain.encrypt(b"p%d" % i) for i in range(2)]
    c.keyring.rotate("field:customer.phone")
    blobs += [plain.encrypt(b"p%d" % i) for i in range(2, 5)]
    sblobs = [subj.encrypt(b"a%d" % i, subject=f"s{i}") for i in range(5)]
    c.keyring.shred("s0")
    data = export_keys(c.keyring, "correct horse battery", scrypt_n=2**14)
    engine = crypto_env.ns.engine
    with engine.begin() as conn:
        conn.execute(key_table.delete())
        conn.execute(keyset_table.delete())
    c.keyring.invalidate()
    with pytest.raises(DecryptionError) as wiped:  # nothing can decrypt after the wipe
        plain.decrypt(blobs[0])
    assert wiped.value.check == "key"
    with pytest.raises(KeyManagementError, match="wrong passphrase"):
        import_keys(c.keyring, data, "wrong horse battery")
    doc = json.loads(data)
    doc["keys"][0]["state"] = "primary" if doc["keys"][0]["state"] != "primary" else "disabled"
    with pytest.raises(KeyManagementError, match="modified"):
        import_keys(c.keyring, json.dumps(doc).encode(), "correct horse battery")
    with pytest.raises(KeyManagementError, match="line 1"):
        import_keys(c.keyring, b'{"format": ', "correct horse battery")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(key_table)).scalar() == 0
    counts = import_keys(c.keyring, data, "correct horse battery")
    assert counts["keysets_added"] >= 6
    assert [plain.decrypt(b) for b in blobs] == [b"p%d" % i for i in range(5)]
    with pytest.raises(ShreddedError):
        subj.decrypt(sblobs[0], subject="s0")
    assert [subj.decrypt(sblobs[i], subject=f"s{i}") for i in range(1, 5)] == [
        b"a%d" % i for i in range(1, 5)
    ]
    # New keysets after a restore get fresh ids (the PostgreSQL sequence was moved on).
    assert c.field("other", "col").decrypt(c.field("other", "col").encrypt(b"x")) == b"x"
    assert [e for e in crypto_env.audit.actions() if e in ("key.export", "key.import")] == [
        "key.export", "key.import"
    ]  # fmt: skip
