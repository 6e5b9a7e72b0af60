"""Sealed boxes (HPKE, RFC 9180): round trips, tampering, misplaced values, the private key
at rest, public-key PEM, and ``tests/vectors/sealed_box.json``.

``cryptography``'s HPKE draws the ephemeral key itself, so it offers no deterministic seam.
The known-answer vectors are therefore made and checked by an independent RFC 9180 base-mode
implementation below (standard-library HMAC for the KDF, ``cryptography`` only for X25519
and the AEADs), which is itself checked against the RFC's own vectors (A.1.1, A.2.1). The
vectors pin the whole format: a change to the label, the key id or the layout fails them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard.crypto._providers import (
    KekDestroyed,
    MemoryKeyProvider,
    WrappedKeyError,
    wrapped_kek_id,
)
from riskguard.crypto._sealed import SealingKeyPair, SealingPublicKey
from riskguard.errors import DecryptionError, KeyManagementError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "sealed_box.json").read_text(encoding="utf-8")
)
CTX = b"courier.id_number:c-1001"
ID_NUMBER = b"11010519491231002X"  # the GB 11643 sample number, not a person's


# -- an independent RFC 9180 base-mode implementation (single shot, DHKEM(X25519)) ---------

_AEADS: dict[int, tuple[int, Any]] = {1: (16, AESGCM), 2: (32, AESGCM), 3: (32, ChaCha20Poly1305)}


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()  # an empty salt is HashLen zeros


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _context(aead_id: int, dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> Any:
    kem = b"KEM" + (0x0020).to_bytes(2, "big")
    eae_prk = _labeled_extract(kem, b"", b"eae_prk", dh)
    shared = _labeled_expand(kem, eae_prk, b"shared_secret", enc + pk_r, 32)
    suite = b"HPKE" + (0x0020).to_bytes(2, "big") + (1).to_bytes(2, "big")
    suite += aead_id.to_bytes(2, "big")
    ksc = (
        b"\x00"
        + _labeled_extract(suite, b"", b"psk_id_hash", b"")
        + _labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = _labeled_extract(suite, shared, b"secret", b"")
    nk, aead = _AEADS[aead_id]
    key = _labeled_expand(suite, secret, b"key", ksc, nk)
    return aead(key), _labeled_expand(suite, secret, b"base_nonce", ksc, 12)


def ref_seal(
    aead_id: int, pk_r: bytes, sk_e: bytes, info: bytes, aad: bytes, pt: bytes
) -> tuple[bytes, bytes]:
    """``SealBase`` with a given ephemeral key: (enc, ct)."""
    eph = X25519PrivateKey.from_private_bytes(sk_e)
    enc = _raw(eph.public_key())
    dh = eph.exchange(X25519PublicKey.from_public_bytes(pk_r))
    aead, nonce = _context(aead_id, dh, enc, pk_r, info)
    return enc, aead.encrypt(nonce, pt, aad)


def ref_open(aead_id: int, sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
    """``OpenBase``."""
    recipient = X25519PrivateKey.from_private_bytes(sk_r)
    dh = recipient.exchange(X25519PublicKey.from_public_bytes(enc))
    aead, nonce = _context(aead_id, dh, enc, _raw(recipient.public_key()), info)
    return aead.decrypt(nonce, ct, aad)  # type: ignore[no-any-return]


def riskguard_info(key_id: bytes, context: bytes) -> bytes:
    return b"riskguard/sealed-box/v1\x00" + key_id + context


# -- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("v", VECTORS["rfc9180"], ids=lambda v: v["section"])
def test_reference_reproduces_rfc9180(v: dict[str, str]) -> None:
    h = bytes.fromhex
    enc, ct = ref_seal(int(v["aead_id"]), h(v["pkRm"]), h(v["skEm"]), h(v["info"]),
                       h(v["aad"]), h(v["pt"]))  # fmt: skip
    assert (enc.hex(), ct.hex()) == (v["enc"], v["ct"])
    assert ref_open(int(v["aead_id"]), h(v["skRm"]), enc, h(v["info"]), h(v["aad"]), ct) == h(
        v["pt"]
    )


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_known_answer_vectors(v: dict[str, str]) -> None:
    h = bytes.fromhex
    pair = SealingKeyPair._from_private_bytes(h(v["recipient_private_key"]))
    assert pair.public_key.raw.hex() == v["recipient_public_key"]
    assert pair.key_id.hex() == v["key_id"] == hashlib.sha256(pair.public_key.raw).hexdigest()[:16]
    context, plaintext = h(v["context"]), h(v["plaintext"])
    assert riskguard_info(pair.key_id, context).hex() == v["info"]
    # the independent implementation writes exactly the stored box ...
    enc, ct = ref_seal(
        2, pair.public_key.raw, h(v["ephemeral_private_key"]), h(v["info"]), b"", plaintext
    )
    assert (b"\x01" + pair.key_id + enc + ct).hex() == v["sealed"]
    # ... and riskguard opens it
    assert pair.open(h(v["sealed"]), context=context) == plaintext
    assert VECTORS["suite"] == {
        "mode": "base",
        "kem": "DHKEM(X25519, HKDF-SHA256)",
        "kem_id": 32,
        "kdf": "HKDF-SHA256",
        "kdf_id": 1,
        "aead": "AES-256-GCM",
        "aead_id": 2,
    }


def test_riskguard_boxes_open_with_the_reference() -> None:
    sk_r = hashlib.sha256(b"interop").digest()
    pair = SealingKeyPair._from_private_bytes(sk_r)
    box = pair.public_key.seal(ID_NUMBER, context=CTX)
    assert box[0] == 1 and box[1:9] == pair.key_id
    info = riskguard_info(pair.key_id, CTX)
    assert ref_open(2, sk_r, box[9:41], info, b"", box[41:]) == ID_NUMBER


# -- behaviour ---------------------------------------------------------------------------------

PAIR = SealingKeyPair.generate()
OTHER = SealingKeyPair.generate()
BOX = PAIR.public_key.seal(ID_NUMBER, context=CTX)


def test_round_trip_with_only_the_public_key() -> None:
    writer = SealingPublicKey.from_pem(PAIR.public_pem())  # all a writer service holds
    box = writer.seal(ID_NUMBER, context=CTX)
    assert len(box) == 1 + 8 + 32 + len(ID_NUMBER) + 16
    assert ID_NUMBER not in box
    assert box != writer.seal(ID_NUMBER, context=CTX)  # a fresh ephemeral key each time
    assert PAIR.open(box, context=CTX) == ID_NUMBER


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=300), context=st.binary(max_size=80))
def test_round_trip_any_value(plaintext: bytes, context: bytes) -> None:
    assert PAIR.open(PAIR.public_key.seal(plaintext, context=context), context=context) == (
        plaintext
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_fails(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(BOX) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(BOX)
    damaged[index] ^= mask
    with pytest.raises(DecryptionError) as exc:
        PAIR.open(bytes(damaged), context=CTX)
    expected = "version" if index == 0 else "key" if index < 9 else "tag"
    assert exc.value.check == expected


def test_wrong_context_fails() -> None:
    with pytest.raises(DecryptionError) as exc:
        PAIR.open(BOX, context=b"courier.id_number:c-1002")
    assert exc.value.check == "tag"
    assert "another record" in exc.value.message


def test_wrong_key_pair_fails_on_the_key_id() -> None:
    with pytest.raises(DecryptionError) as exc:
        OTHER.open(BOX, context=CTX)
    assert exc.value.check == "key"
    assert PAIR.key_id.hex() in exc.value.message


def test_relabelled_key_id_fails_on_the_tag() -> None:
    relabelled = BOX[:1] + OTHER.key_id + BOX[9:]
    with pytest.raises(DecryptionError) as exc:
        OTHER.open(relabelled, context=CTX)
    assert exc.value.check == "tag"


@pytest.mark.parametrize("length", [0, 1, 9, 41, 56])
def test_truncated(length: int) -> None:
    with pytest.raises(DecryptionError) as exc:
        PAIR.open(BOX[:length], context=CTX)
    assert exc.value.check == "format"


def test_extended_and_unknown_version() -> None:
    with pytest.raises(DecryptionError) as exc:
        PAIR.open(BOX + b"\x00", context=CTX)
    assert exc.value.check == "tag"
    with pytest.raises(DecryptionError) as exc:
        PAIR.open(b"\x02" + BOX[1:], context=CTX)
    assert exc.value.check == "version"
    assert exc.value.hint is not None


def test_errors_never_carry_the_plaintext_or_context() -> None:
    for damaged, context in ((BOX[:-1] + b"\x00", CTX), (BOX, b"elsewhere"), (BOX[:20], CTX)):
        with pytest.raises(DecryptionError) as exc:
            PAIR.open(damaged, context=context)
        text = exc.value.diagnostics()
        assert ID_NUMBER.decode() not in text and CTX.decode() not in text


def test_types_are_checked() -> None:
    with pytest.raises(TypeError):
        PAIR.public_key.seal(ID_NUMBER, context="courier")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PAIR.public_key.seal("11010519491231002X", context=CTX)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PAIR.open("box", context=CTX)  # type: ignore[arg-type]


# -- public keys -------------------------------------------------------------------------------


def test_public_pem_round_trip() -> None:
    pem = PAIR.public_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert SealingPublicKey.from_pem(pem) == PAIR.public_key
    assert SealingPublicKey.from_pem(pem.decode()) == PAIR.public_key
    assert hash(SealingPublicKey(PAIR.public_key.raw)) == hash(PAIR.public_key)
    assert PAIR.public_key != OTHER.public_key and PAIR.public_key != "key"
    assert len(PAIR.public_key.key_id_hex) == 16
    assert repr(PAIR.public_key) == f"SealingPublicKey(key_id={PAIR.public_key.key_id_hex})"


@pytest.mark.parametrize(
    ("pem", "expected"),
    [
        (b"not a pem", "not a PEM public key"),
        (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not an X25519 sealing key",
        ),
    ],
)
def test_bad_public_pem(pem: bytes, expected: str) -> None:
    with pytest.raises(KeyManagementError, match=expected):
        SealingPublicKey.from_pem(pem)


def test_bad_raw_public_keys() -> None:
    with pytest.raises(KeyManagementError, match="32 raw X25519 bytes"):
        SealingPublicKey(b"\x01" * 31)
    with pytest.raises(KeyManagementError, match="low-order"):
        SealingPublicKey(bytes(32))
    with pytest.raises(KeyManagementError, match="low-order"):
        SealingPublicKey(b"\x01" + bytes(31))


# -- the private key at rest --------------------------------------------------------------------


def _private_raw(pair: SealingKeyPair) -> bytes:
    return pair._private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_wrap_and_unwrap_the_private_key() -> None:
    provider = MemoryKeyProvider()
    blob = PAIR.wrap(provider)
    assert blob[0] == 1 and blob[1:9] == PAIR.key_id
    assert _private_raw(PAIR) not in blob
    assert wrapped_kek_id(blob[9:]) in {k.id for k in provider.keks() if k.purpose == "data"}
    back = SealingKeyPair.unwrap(blob, provider)
    assert back.key_id == PAIR.key_id
    assert back.open(BOX, context=CTX) == ID_NUMBER
    assert "private" not in repr(back) and _private_raw(PAIR).hex() not in repr(back)
    assert repr(back) == f"SealingKeyPair(key_id={PAIR.key_id.hex()})"
    subject = PAIR.wrap(provider, purpose="subject")
    assert SealingKeyPair.unwrap(subject, provider).key_id == PAIR.key_id


def test_wrapped_private_key_is_bound_to_its_key_id() -> None:
    provider = MemoryKeyProvider()
    blob = PAIR.wrap(provider)
    relabelled = blob[:1] + OTHER.key_id + blob[9:]
    with pytest.raises(WrappedKeyError) as exc:
        SealingKeyPair.unwrap(relabelled, provider)
    assert exc.value.check == "tag"


def test_unwrap_refusals() -> None:
    provider = MemoryKeyProvider()
    blob = PAIR.wrap(provider)
    with pytest.raises(WrappedKeyError) as exc:
        SealingKeyPair.unwrap(blob, MemoryKeyProvider())
    assert exc.value.check == "unknown_kek"
    with pytest.raises(KeyManagementError, match="truncated"):
        SealingKeyPair.unwrap(blob[:9], provider)
    with pytest.raises(KeyManagementError, match="version 7"):
        SealingKeyPair.unwrap(b"\x07" + blob[1:], provider)
    # a key that does not match the id the blob names
    context = b"sealing-key:" + PAIR.key_id.hex().encode()
    forged = b"\x01" + PAIR.key_id + provider.wrap(_private_raw(OTHER), context=context)
    with pytest.raises(KeyManagementError, match="does not match key id"):
        SealingKeyPair.unwrap(forged, provider)
    short = b"\x01" + PAIR.key_id + provider.wrap(b"x" * 16, context=context)
    with pytest.raises(KeyManagementError, match="not an X25519 key"):
        SealingKeyPair.unwrap(short, provider)


def test_destroying_the_kek_shreds_the_sealing_key() -> None:
    provider = MemoryKeyProvider()
    blob = PAIR.wrap(provider)
    old = wrapped_kek_id(blob[9:])
    provider.rotate("data")
    provider.destroy(old)
    with pytest.raises(KekDestroyed):
        SealingKeyPair.unwrap(blob, provider)
