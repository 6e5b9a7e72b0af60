"""Keys under concurrency and across processes: subject-key creation during a subject-KEK
rotation, shreds at once, stale provider views, and cache copies that must not outlive
the keyring's own entries."""

from __future__ import annotations

import threading

import pytest

from riskguard.crypto import FieldCrypto, Keyring, MemoryKeyProvider
from riskguard.crypto._format import parse
from riskguard.errors import KeyManagementError, ShreddedError
from tests.crypto.conftest import CryptoEnv

PHONE = b"+8613800138000"


def test_subject_keys_created_during_rotations_are_never_lost(crypto_env: CryptoEnv) -> None:
    """One thread creates subjects while another rotates the subject KEK (destroying the
    old one each time): every subject written stays readable."""
    f = crypto_env.crypto.field("customer", "phone", per_subject=True)
    written: dict[str, bytes] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def create() -> None:
        try:
            i = 0
            while not stop.is_set() or i < 30:
                sid = f"c-{i}"
                written[sid] = f.encrypt(PHONE, subject=sid)
                i += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=create)
    t.start()
    try:
        for _ in range(4):
            crypto_env.keyring.rotate_subject_kek()
    finally:
        stop.set()
        t.join(timeout=120)
    assert not errors, errors
    assert len(written) >= 30
    assert all(f.decrypt(b, subject=s) == PHONE for s, b in written.items())
    destroyed = [k for k in crypto_env.provider.keks() if k.purpose == "subject"
                 and k.state == "destroyed"]  # fmt: skip
    assert len(destroyed) >= 4


def test_two_shreds_at_once_both_finish(crypto_env: CryptoEnv) -> None:
    f = crypto_env.crypto.field("customer", "phone", per_subject=True)
    blobs = {f"s{i}": f.encrypt(PHONE, subject=f"s{i}") for i in range(12)}
    results: list[object] = []

    def shred(sid: str) -> None:
        try:
            results.append(crypto_env.keyring.shred(sid))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=shred, args=(s,)) for s in ("s0", "s1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a shred did not finish"
    assert all(not isinstance(r, BaseException) for r in results), results
    for sid, blob in blobs.items():
        if sid in ("s0", "s1"):
            with pytest.raises(ShreddedError):
                f.decrypt(blob, subject=sid)
        else:
            assert f.decrypt(blob, subject=sid) == PHONE
    assert crypto_env.audit.actions().count("key.shred") == 2


def test_a_stale_provider_cannot_wrap_a_subject_key_under_a_rotated_kek(
    crypto_env: CryptoEnv,
) -> None:
    """Two processes hold the same KEKs; one rotates the subject KEK. The other, whose view
    still names the old KEK as primary, is refused instead of writing a key that the
    rotation's destroy would make unreadable."""
    seed = b"s" * 32
    here, there = MemoryKeyProvider(seed=seed), MemoryKeyProvider(seed=seed)
    engine = crypto_env.ns.engine
    a = FieldCrypto(Keyring(engine, here))
    b = FieldCrypto(Keyring(engine, there))
    a.field("customer", "phone", per_subject=True).encrypt(PHONE, subject="first")
    a.keyring.rotate_subject_kek()
    with pytest.raises(KeyManagementError, match="rotated by another process"):
        b.field("customer", "phone", per_subject=True).encrypt(PHONE, subject="second")
    # Nothing of the refused write landed: the subject can be created afresh.
    blob = a.field("customer", "phone", per_subject=True).encrypt(PHONE, subject="second")
    assert a.field("customer", "phone", per_subject=True).decrypt(blob, subject="second") == PHONE


def test_a_shred_stops_writes_in_other_processes_at_once(crypto_env: CryptoEnv) -> None:
    other = Keyring(crypto_env.ns.engine, crypto_env.provider, cache_ttl_s=300)
    f_other = FieldCrypto(other).field("customer", "phone", per_subject=True)
    f_other.encrypt(PHONE, subject="u1")  # warm: the key is cached there
    crypto_env.keyring.shred("u1")
    with pytest.raises(ShreddedError):
        f_other.encrypt(PHONE, subject="u1")


def test_fast_path_copies_expire_with_the_keyring_entry(crypto_env: CryptoEnv) -> None:
    """A field whose first use comes late must not get a fresh TTL on a key that the
    keyring itself cached long ago (a retire waits out one TTL after the promotion)."""
    now = [1000.0]
    kr = Keyring(crypto_env.ns.engine, crypto_env.provider, cache_ttl_s=300,
                 clock=lambda: now[0])  # fmt: skip
    c = FieldCrypto(kr)
    first = c.field("customer", "phone", keyset="field:pii")
    first.encrypt(PHONE)  # loads v1 at t=1000, cached until 1300
    crypto_env.keyring.rotate("field:pii")  # another process promotes v2
    now[0] = 1299.0
    second = c.field("customer", "address", keyset="field:pii")
    assert parse(second.encrypt(PHONE)).version == 1  # still the cached entry
    now[0] = 1300.5
    assert parse(second.encrypt(PHONE)).version == 2
    assert parse(first.encrypt(PHONE)).version == 2
