"""The field cipher and keyring on SQLite, PostgreSQL and MariaDB: round trips, tampering,
misplaced values, wrong and retired keys, shredding, pii.read auditing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard.crypto import FieldCrypto, Keyring, MemoryKeyProvider
from riskguard.crypto._format import HEADER_SIZE, decode_text, encode_text, parse
from riskguard.errors import DecryptionError, KeyManagementError, ShreddedError
from tests.crypto.conftest import CryptoEnv

PHONE = b"+8613800138000"


def test_round_trip_text_and_bytes(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone")
    token = f.encrypt_text("+8613800138000")
    assert "8613800138000" not in token
    assert f.decrypt_text(token) == "+8613800138000"
    assert f.decrypt(f.encrypt(b"")) == b""
    blob = f.encrypt(PHONE)
    assert len(blob) == HEADER_SIZE + len(PHONE) + 16
    env = parse(blob)
    assert (env.keyset_id, env.version) == f.key_of(blob)
    # Two encryptions of one value differ (random nonce): no equality leak.
    assert f.encrypt(PHONE) != f.encrypt(PHONE)


def test_ciphertext_names_its_key_and_is_read_without_trying_keys(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone")
    old = f.encrypt(PHONE)
    v2 = crypto_env.keyring.rotate("field:customer.phone")
    new = f.encrypt(PHONE)
    assert parse(old).version == 1 and parse(new).version == v2 == 2
    assert f.decrypt(old) == f.decrypt(new) == PHONE


def test_single_byte_changes_all_fail(crypto_env: CryptoEnv) -> None:
    """Every position, two different changes each: none decrypts."""
    f = crypto_env.crypto.field("customer", "phone")
    blob = f.encrypt(PHONE)
    for i in range(len(blob)):
        for flip in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= flip
            with pytest.raises(DecryptionError) as ei:
                f.decrypt(bytes(bad))
            assert ei.value.check in ("format", "version", "key", "context", "tag")
            assert "13800138000" not in str(ei.value)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_fails(crypto_env: CryptoEnv, data: st.DataObject) -> None:
    f = crypto_env.crypto.field("customer", "phone")
    value = data.draw(st.binary(max_size=64))
    blob = f.encrypt(value)
    i = data.draw(st.integers(0, len(blob) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda x: x != blob[i]))
    bad = blob[:i] + bytes([b]) + blob[i + 1 :]
    with pytest.raises(DecryptionError):
        f.decrypt(bad)


def test_truncated_reencoded_and_foreign_input(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone")
    blob = f.encrypt(PHONE)
    for cut in (0, 1, 9, HEADER_SIZE, len(blob) - 1):
        with pytest.raises(DecryptionError) as ei:
            f.decrypt(blob[:cut])
        assert ei.value.check in ("format", "tag")
    token = encode_text(blob)
    import base64

    padded = base64.urlsafe_b64encode(blob).decode()
    std = base64.b64encode(blob).decode()
    for text in (token + "=", std if std != token else token + "+", padded + "==", "not base64!"):
        with pytest.raises(DecryptionError) as ei:
            f.decrypt_text(text)
        assert ei.value.check == "format"
    with pytest.raises(DecryptionError) as ei:
        f.decrypt(b"\x02" + blob[1:])
    assert ei.value.check == "version"
    with pytest.raises(DecryptionError) as ei:
        f.decrypt(blob[:1] + struct.pack(">II", 999_999, 1) + blob[9:])
    assert ei.value.check == "key"
    assert decode_text(token) == blob


def test_value_copied_to_another_column_or_row_fails_on_context(crypto_env: CryptoEnv) -> None:
    c = crypto_env.crypto
    phone = c.field("customer", "phone")
    address = c.field("customer", "address", keyset="field:customer.phone")
    blob = phone.encrypt(PHONE)
    with pytest.raises(DecryptionError) as ei:
        address.decrypt(blob)
    assert ei.value.check == "context"
    per_row = c.field("order", "phone", per_row=True)
    b1 = per_row.encrypt(PHONE, row="o-1")
    assert per_row.decrypt(b1, row="o-1") == PHONE
    with pytest.raises(DecryptionError) as ei:
        per_row.decrypt(b1, row="o-2")
    assert ei.value.check == "context"
    with pytest.raises(DecryptionError) as ei:
        per_row.decrypt(b1)
    assert ei.value.check == "context"


def test_per_subject_key_binds_the_subject(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone", per_subject=True)
    a = f.encrypt(PHONE, subject="u-1")
    b = f.encrypt(PHONE, subject="u-2")
    assert parse(a).keyset_id != parse(b).keyset_id
    assert f.decrypt(a, subject="u-1") == PHONE
    with pytest.raises(DecryptionError) as ei:
        f.decrypt(a, subject="u-2")
    assert ei.value.check == "context"
    # Subject ids are exact: case matters on every engine (MariaDB's collation would not).
    c = f.encrypt(PHONE, subject="U-1")
    assert parse(c).keyset_id not in (parse(a).keyset_id, parse(b).keyset_id)


def test_wrong_key_fails(crypto_env: CryptoEnv, tmp_path: object) -> None:
    """A ciphertext from another keyring (same ids, other key material) fails on its tag."""
    from riskguard import db

    other_engine = db.create_engine(f"sqlite:///{tmp_path}/other.db")  # type: ignore[str-bytes-safe]
    db.create_schema(other_engine)
    other = FieldCrypto(Keyring(other_engine, MemoryKeyProvider()))
    blob = other.field("customer", "phone").encrypt(PHONE)
    other_engine.dispose()
    mine = crypto_env.crypto.field("customer", "phone")
    with pytest.raises(DecryptionError) as ei:
        mine.decrypt(blob)  # no keyset 1 here yet
    assert ei.value.check == "key"
    mine.encrypt(PHONE)  # now keyset 1 version 1 exists here, with other key material
    crypto_env.keyring.invalidate()
    with pytest.raises(DecryptionError) as ei:
        mine.decrypt(blob)
    assert ei.value.check == "tag"


def test_retired_and_destroyed_versions(crypto_env: CryptoEnv) -> None:
    kr = crypto_env.keyring
    f = crypto_env.crypto.field("customer", "phone")
    old = f.encrypt(PHONE)
    kr.rotate("field:customer.phone")
    info = kr.describe("field:customer.phone")
    with pytest.raises(KeyManagementError, match="still encrypted"):
        kr.retire("field:customer.phone", 1, remaining=3)
    with pytest.raises(KeyManagementError, match="ago"):
        kr.retire("field:customer.phone", 1, remaining=0, now=info.rotated_at + 1)
    with pytest.raises(KeyManagementError, match="primary"):
        kr.retire("field:customer.phone", 2, remaining=0, now=info.rotated_at + 10_000)
    with pytest.raises(KeyManagementError, match="retire it"):
        kr.destroy("field:customer.phone", 1)
    kr.retire("field:customer.phone", 1, remaining=0, now=info.rotated_at + 10_000)
    assert kr.describe("field:customer.phone").min_decryption_version == 2
    with pytest.raises(DecryptionError) as ei:
        f.decrypt(old)
    assert ei.value.check == "key" and "retired" in ei.value.message
    # Another process sees it too (no stale cache: it never had the key).
    with pytest.raises(DecryptionError):
        crypto_env.fresh().field("customer", "phone").decrypt(old)
    kr.destroy("field:customer.phone", 1)
    versions = {v.version: v for v in kr.describe("field:customer.phone").versions}
    assert versions[1].state == "destroyed" and versions[2].state == "primary"
    with pytest.raises(DecryptionError, match="destroyed"):
        crypto_env.fresh().field("customer", "phone").decrypt(old)
    actions = crypto_env.audit.actions()
    for a in ("key.create", "key.rotate", "key.retire", "key.destroy"):
        assert a in actions


def test_staged_version_reads_before_it_is_promoted(crypto_env: CryptoEnv) -> None:
    kr = crypto_env.keyring
    f = crypto_env.crypto.field("customer", "phone")
    f.encrypt(PHONE)
    v = kr.add_version("field:customer.phone")
    assert parse(f.encrypt(PHONE)).version == 1  # not primary yet
    kr.promote("field:customer.phone", v)
    assert parse(f.encrypt(PHONE)).version == v
    with pytest.raises(KeyManagementError, match="no version 9"):
        kr.promote("field:customer.phone", 9)


def test_primary_cached_then_refreshed_after_ttl(crypto_env: CryptoEnv) -> None:
    now = [1000.0]
    kr = Keyring(crypto_env.ns.engine, crypto_env.provider, cache_ttl_s=60, clock=lambda: now[0])
    f = FieldCrypto(kr).field("customer", "phone")
    f.encrypt(PHONE)
    crypto_env.keyring.rotate("field:customer.phone")  # another process promotes v2
    assert parse(f.encrypt(PHONE)).version == 1
    now[0] += 61
    assert parse(f.encrypt(PHONE)).version == 2


def test_no_provider_call_on_the_hot_path(crypto_env: CryptoEnv) -> None:
    calls = []
    provider = crypto_env.provider
    real = provider.unwrap

    def counting(wrapped: bytes, *, context: bytes) -> bytes:
        calls.append(context)
        return real(wrapped, context=context)

    provider.unwrap = counting  # type: ignore[method-assign]
    f = crypto_env.fresh().field("customer", "phone")
    kr = f._keyring
    kr.cache_ttl_s = 300
    for _ in range(200):
        assert f.decrypt(f.encrypt(PHONE)) == PHONE
    assert len(calls) == 1


def test_shred_makes_reads_raise_and_writes_refuse(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone", per_subject=True)
    mine = f.encrypt(PHONE, subject="u-1")
    theirs = f.encrypt(PHONE, subject="u-2")
    report = crypto_env.keyring.shred("u-1")
    assert report.versions_destroyed == 1 and report.backups_protected
    with pytest.raises(ShreddedError):
        f.decrypt(mine, subject="u-1")
    with pytest.raises(ShreddedError):
        crypto_env.fresh().field("customer", "phone", per_subject=True).decrypt(mine, subject="u-1")
    with pytest.raises(ShreddedError):
        f.encrypt(PHONE, subject="u-1")
    assert f.decrypt(theirs, subject="u-2") == PHONE
    assert (
        crypto_env.fresh()
        .field("customer", "phone", per_subject=True)
        .decrypt(theirs, subject="u-2")
        == PHONE
    )
    shred = [e for e in crypto_env.audit.events if e.action == "key.shred"]
    assert len(shred) == 1 and shred[0].subject == "u-1"
    # A subject with no key yet gets a tombstone: their first write is refused too.
    crypto_env.keyring.shred("never-wrote")
    with pytest.raises(ShreddedError):
        f.encrypt(PHONE, subject="never-wrote")


def test_pii_reads_one_event_per_block(crypto_env: CryptoEnv) -> None:
    c = crypto_env.crypto
    phone = c.field("customer", "phone", per_row=True)
    addr = c.field("customer", "address", per_row=True)
    blobs = [(r, phone.encrypt(PHONE, row=r), addr.encrypt(b"x", row=r)) for r in "abc"]
    phone.decrypt(blobs[0][1], row="a")  # outside: not recorded
    with c.pii_reads() as reads:
        for r, p, a in blobs:
            phone.decrypt(p, row=r)
            phone.decrypt(p, row=r)
            addr.decrypt(a, row=r)
    assert reads.counts == {"customer.phone": 6, "customer.address": 3}
    ev = [e for e in crypto_env.audit.events if e.action == "pii.read"]
    assert len(ev) == 1
    assert ev[0].details["fields"]["customer.phone"] == {"count": 6, "records": ["a", "b", "c"]}
    with c.pii_reads():
        pass
    assert len([e for e in crypto_env.audit.events if e.action == "pii.read"]) == 1


def test_truncated_input_fails_cleanly_with_a_warm_cache(crypto_env: CryptoEnv) -> None:
    """After one value decrypted (the fast path is warm), a truncated one still fails with
    DecryptionError check "format", never a ValueError from the AEAD."""
    f = crypto_env.crypto.field("customer", "phone")
    blob = f.encrypt(PHONE)
    assert f.decrypt(blob) == PHONE
    for cut in range(13, HEADER_SIZE + 16):
        with pytest.raises(DecryptionError) as ei:
            f.decrypt(blob[:cut])
        assert ei.value.check == "format", cut


def test_where_each_byte_change_is_caught(crypto_env: CryptoEnv) -> None:
    """The check named matches the part of the envelope that changed."""
    f = crypto_env.crypto.field("customer", "phone")
    f.encrypt(PHONE)
    blob = f.encrypt(PHONE)
    expected = {0: "version", **dict.fromkeys(range(1, 9), "key"),
                **dict.fromkeys(range(9, 13), "context")}  # fmt: skip
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionError) as ei:
            f.decrypt(bytes(bad))
        assert ei.value.check == expected.get(i, "tag"), i


def test_missing_version_of_an_existing_keyset(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone")
    blob = f.encrypt(PHONE)
    v9 = blob[:5] + struct.pack(">I", 9) + blob[9:]
    with pytest.raises(DecryptionError) as ei:
        f.decrypt(v9)
    assert ei.value.check == "key" and "version 9" in ei.value.message
