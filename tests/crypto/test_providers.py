"""KEK providers: the wrapped-key format, memory, keyring file, environment, Transit (with
:class:`FakeTransit` and a Vault HTTP emulation on ``httpx.MockTransport``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from riskguard.config import Settings
from riskguard.crypto import (
    EnvKeyProvider,
    FileKeyProvider,
    KekDestroyed,
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
from riskguard.crypto._kek import _fingerprint_id, _wrap_local_from_parts
from riskguard.crypto._keyfile import _canonical, _Kdf
from riskguard.crypto._transit import TransitKeyVersions
from riskguard.errors import KeyManagementError
from tests.crypto.doubles_transit import FakeTransit

REPO = Path(__file__).resolve().parents[2]
PASS = "correct horse battery staple"
FAST_N = 2**14
KEY = bytes(range(32))
CTX = b"dek:7:1"
TOKEN = "hvs.test-token-not-a-secret"
SECRET_KEK = base64.urlsafe_b64encode(hashlib.sha256(b"env kek 1").digest()).decode()
OLD_KEK = base64.urlsafe_b64encode(hashlib.sha256(b"env kek 0").digest()).decode()


# -- the Vault Transit HTTP emulation ------------------------------------------------------


class VaultEmulator:
    """``httpx.MockTransport`` handler speaking Vault Transit's HTTP API over a FakeTransit.

    It checks the request shapes (token header, JSON bodies, base64 fields) and answers as
    Vault does: ``{"data": …}`` or ``{"errors": […]}``.
    """

    def __init__(self, backend: FakeTransit, *, rotate_returns_data: bool = True) -> None:
        self.backend = backend
        self.rotate_returns_data = rotate_returns_data
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-Vault-Token") != TOKEN:
            return httpx.Response(403, json={"errors": ["permission denied"]})
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        self.headers.append(request.headers)
        try:
            return self._route(request.method, path, body)
        except TransitError as exc:
            return httpx.Response(400, json={"errors": [exc.message]})

    def _route(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        b = self.backend
        if m := re.fullmatch(r"/v1/transit/(encrypt|decrypt)/([\w.-]+)", path):
            assert method == "POST" and body is not None
            op, name = m.groups()
            ad = _b64(body.get("associated_data", body.get("context", "")))
            if op == "encrypt":
                assert set(body) <= {"plaintext", "associated_data", "context"}
                ct = b.encrypt(name, _b64(body["plaintext"]), ad)
                return _data({"ciphertext": ct, "key_version": int(ct.split(":")[1][1:])})
            assert set(body) <= {"ciphertext", "associated_data", "context"}
            pt = b.decrypt(name, body["ciphertext"], ad)
            return _data({"plaintext": base64.b64encode(pt).decode()})
        if m := re.fullmatch(r"/v1/transit/keys/([\w.-]+)(/rotate|/config|/trim)?", path):
            name, action = m.groups()
            if action is None:
                assert method == "GET"
                return _data(b.read(name))
            assert method == "POST" and body is not None
            if action == "/rotate":
                b.rotate(name)
                return _data(b.read(name)) if self.rotate_returns_data else httpx.Response(204)
            if action == "/config":
                assert set(body) == {"min_decryption_version", "min_encryption_version"}
                b.configure(name, body["min_decryption_version"], body["min_encryption_version"])
                return httpx.Response(204)
            assert set(body) == {"min_available_version"}
            b.trim_only(name, body["min_available_version"])
            return _data(b.read(name))
        return httpx.Response(404, json={"errors": []})


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _data(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"request_id": "r", "data": data, "warnings": None})


def vault_client(
    handler: Callable[[httpx.Request], httpx.Response], **kw: Any
) -> VaultTransitClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return VaultTransitClient("https://vault.invalid:8200", TOKEN, http=http, **kw)


# -- providers ------------------------------------------------------------------------------

ROTATING = ["memory", "file", "transit", "vault"]


def _build(kind: str, tmp_path: Path) -> KeyProvider:
    if kind == "memory":
        return MemoryKeyProvider()
    if kind == "file":
        return FileKeyProvider.create(tmp_path / "keyring.json", PASS, scrypt_n=FAST_N)
    if kind == "env":
        return EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK})
    if kind == "transit":
        return TransitKeyProvider(FakeTransit())
    return TransitKeyProvider(vault_client(VaultEmulator(FakeTransit())))


@pytest.fixture(params=ROTATING)
def rotating(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    return _build(request.param, tmp_path)


@pytest.fixture(params=[*ROTATING, "env"])
def any_provider(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    return _build(request.param, tmp_path)


def _primary(p: KeyProvider, purpose: str = "data") -> str:
    (kek,) = [k for k in p.keks() if k.purpose == purpose and k.state == "primary"]
    return kek.id


# -- every provider ---------------------------------------------------------------------------


def test_round_trip(any_provider: KeyProvider) -> None:
    assert isinstance(any_provider, KeyProvider)
    wrapped = any_provider.wrap(KEY, context=CTX)
    assert KEY not in wrapped
    assert any_provider.unwrap(wrapped, context=CTX) == KEY
    assert wrapped != any_provider.wrap(KEY, context=CTX)  # fresh nonce each time


def test_wrong_context_fails_with_tag_check(any_provider: KeyProvider) -> None:
    wrapped = any_provider.wrap(KEY, context=b"dek:7:1")
    with pytest.raises(WrappedKeyError) as exc:
        any_provider.unwrap(wrapped, context=b"dek:7:2")
    assert exc.value.check == "tag"
    assert exc.value.key_id == wrapped_kek_id(wrapped)


def test_subject_purpose_round_trip(any_provider: KeyProvider) -> None:
    wrapped = any_provider.wrap(KEY, context=CTX, purpose="subject")
    assert any_provider.unwrap(wrapped, context=CTX) == KEY


@pytest.mark.parametrize(
    ("damage", "check"),
    [
        (lambda b: b[:3], "format"),
        (lambda b: b"XYZ" + b[3:], "format"),
        (lambda b: b[:3] + b"\x09" + b[4:], "format"),
        (lambda b: b[:4] + b"\x00" + b[5:], "format"),
        (lambda b: b[: 5 + b[4]], "format"),
        (lambda b: b[: 5 + b[4] + 1 + b[5 + b[4]] + 3], "format"),
    ],
    ids=["short", "magic", "scheme", "empty-kek-id", "no-purpose", "truncated-body"],
)
def test_damaged_blob_names_the_failed_check(
    any_provider: KeyProvider, damage: Callable[[bytes], bytes], check: str
) -> None:
    wrapped = any_provider.wrap(KEY, context=CTX)
    with pytest.raises(WrappedKeyError) as exc:
        any_provider.unwrap(damage(wrapped), context=CTX)
    assert exc.value.check == check


def test_unknown_kek(any_provider: KeyProvider) -> None:
    wrapped = any_provider.wrap(KEY, context=CTX)
    kek_id = wrapped_kek_id(wrapped)
    other = "kffffffffffff" if ":" not in kek_id else "someone-else:v1"
    forged = wrapped.replace(kek_id.encode(), other.encode(), 1)
    forged = forged[:4] + bytes((len(other),)) + forged[5:]
    with pytest.raises(WrappedKeyError) as exc:
        any_provider.unwrap(forged, context=CTX)
    assert exc.value.check == "unknown_kek"


def test_inputs_are_checked(any_provider: KeyProvider) -> None:
    with pytest.raises(TypeError):
        any_provider.wrap(KEY, context="dek:1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        any_provider.wrap("key", context=CTX)  # type: ignore[arg-type]
    with pytest.raises(KeyManagementError, match="1 to 1024 bytes"):
        any_provider.wrap(b"", context=CTX)
    with pytest.raises(KeyManagementError, match="invalid KEK purpose"):
        any_provider.wrap(KEY, context=CTX, purpose="Data!")
    with pytest.raises(TypeError):
        any_provider.unwrap("not bytes", context=CTX)  # type: ignore[arg-type]


def test_rotate_keeps_old_unwrappable_and_new_primary(rotating: KeyProvider) -> None:
    before = rotating.wrap(KEY, context=CTX)
    old = wrapped_kek_id(before)
    subject_primary = _primary(rotating, "subject")
    new = rotating.rotate("data")
    assert new != old
    states = {k.id: k.state for k in rotating.keks()}
    assert states[old] == "decrypt_only"
    assert states[new] == "primary"
    assert states[subject_primary] == "primary"  # other purposes untouched
    after = rotating.wrap(KEY, context=CTX)
    assert wrapped_kek_id(after) == new
    assert rotating.unwrap(before, context=CTX) == KEY
    assert rotating.unwrap(after, context=CTX) == KEY


def test_destroy_makes_unwrap_raise_kek_destroyed(rotating: KeyProvider) -> None:
    wrapped = rotating.wrap(KEY, context=CTX, purpose="subject")
    old = wrapped_kek_id(wrapped)
    rotating.rotate("subject")
    rotating.destroy(old)
    with pytest.raises(KekDestroyed) as exc:
        rotating.unwrap(wrapped, context=CTX)
    assert exc.value.key_id == old
    assert exc.value.code == "kek_destroyed"
    assert isinstance(exc.value, KeyManagementError)
    info = {k.id: k for k in rotating.keks()}[old]
    assert info.state == "destroyed"
    rotating.destroy(old)  # idempotent


def test_destroying_the_primary_is_refused(rotating: KeyProvider) -> None:
    primary = _primary(rotating)
    with pytest.raises(KeyManagementError, match="primary") as exc:
        rotating.destroy(primary)
    assert exc.value.hint is not None and "rotate" in exc.value.hint
    assert rotating.unwrap(rotating.wrap(KEY, context=CTX), context=CTX) == KEY


def test_destroying_an_unknown_kek_is_refused(rotating: KeyProvider) -> None:
    with pytest.raises(KeyManagementError, match="no KEK"):
        rotating.destroy("k000000000000" if rotating.name != "memory" else "nope")


def test_keks_lists_ids_purposes_states_and_utc_times(rotating: KeyProvider) -> None:
    keks = rotating.keks()
    assert {k.purpose for k in keks} == {"data", "subject"}
    assert all(k.state == "primary" for k in keks)
    assert len({k.id for k in keks}) == len(keks)
    for k in keks:
        assert k.created is not None and k.created.utcoffset() == timedelta(0)
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", k.id)


def test_wrap_for_a_purpose_without_kek(tmp_path: Path) -> None:
    p = MemoryKeyProvider(purposes=("data",))
    with pytest.raises(KeyManagementError, match="no KEK for purpose 'subject'") as exc:
        p.wrap(KEY, context=CTX, purpose="subject")
    assert exc.value.hint == "create one with rotate('subject')"
    p.rotate("subject")
    assert p.unwrap(p.wrap(KEY, context=CTX, purpose="subject"), context=CTX) == KEY


def test_purpose_swap_in_the_header_fails(rotating: KeyProvider) -> None:
    wrapped = rotating.wrap(KEY, context=CTX, purpose="data")
    swapped = wrapped.replace(b"\x04data", b"\x04date", 1)
    with pytest.raises(WrappedKeyError) as exc:
        rotating.unwrap(swapped, context=CTX)
    assert exc.value.check == "purpose"


# -- the wrapped-key format ------------------------------------------------------------------


def _ref_hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def test_wrapped_key_format_byte_by_byte() -> None:
    kek, nonce = bytes(range(100, 132)), bytes(range(12))
    kek_id = "k" + _ref_hkdf_sha256(kek, b"riskguard/kek-id/v1", 6).hex()
    assert _fingerprint_id(kek) == kek_id
    blob = _wrap_local_from_parts(kek_id, kek, "data", KEY, CTX, nonce)
    header = b"RGK" + b"\x01" + bytes((len(kek_id),)) + kek_id.encode() + b"\x04" + b"data"
    aad = b"riskguard/wrapped-key/v1\x00" + header + CTX
    assert blob == header + nonce + AESGCM(kek).encrypt(nonce, KEY, aad)
    assert len(blob) == 3 + 1 + 1 + 13 + 1 + 4 + 12 + 32 + 16
    assert kek_id == "k26563b41ae28"
    assert blob.hex() == (
        "52474b010d6b3236353633623431616532380464617461000102030405060708090a0b"
        "9faa3a4fb948c7ee951a94c39a9786bdf9062f833916c632df0bf3104ff15fff"
        "4990d3fdc3362398d90bda624cfea964"
    )
    provider = EnvKeyProvider(environ={"RISKGUARD_KEK": base64.urlsafe_b64encode(kek).decode()})
    assert provider.unwrap(blob, context=CTX) == KEY
    assert wrapped_kek_id(blob) == kek_id


_SEEDED = MemoryKeyProvider(seed=b"hypothesis")
_SEEDED_BLOB = _SEEDED.wrap(KEY, context=CTX)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_fails(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(_SEEDED_BLOB) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(_SEEDED_BLOB)
    damaged[index] ^= mask
    with pytest.raises(KeyManagementError):
        _SEEDED.unwrap(bytes(damaged), context=CTX)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=96), context=st.binary(max_size=64))
def test_round_trip_any_key_and_context(key: bytes, context: bytes) -> None:
    assert _SEEDED.unwrap(_SEEDED.wrap(key, context=context), context=context) == key


def test_seeded_memory_provider_is_reproducible() -> None:
    a, b = MemoryKeyProvider(seed=b"s"), MemoryKeyProvider(seed=b"s")
    assert [k.id for k in a.keks()] == [k.id for k in b.keks()]
    assert b.unwrap(a.wrap(KEY, context=CTX), context=CTX) == KEY
    assert a.rotate() == b.rotate()
    assert [k.id for k in MemoryKeyProvider(seed=b"t").keks()] != [k.id for k in a.keks()]


def test_clock_is_a_parameter() -> None:
    t0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
    p = MemoryKeyProvider(clock=lambda: t0)
    old = _primary(p)
    p.rotate()
    p.destroy(old)
    info = {k.id: k for k in p.keks()}[old]
    assert (info.created, info.destroyed) == (t0, t0)


def test_providers_are_thread_safe(tmp_path: Path) -> None:
    for provider in (MemoryKeyProvider(), _build("file", tmp_path)):
        errors: list[BaseException] = []

        def work(p: KeyProvider = provider, errors: list[BaseException] = errors) -> None:
            try:
                for i in range(40):
                    ctx = b"t:%d" % i
                    assert p.unwrap(p.wrap(KEY, context=ctx), context=ctx) == KEY
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in range(4):
            provider.rotate("data")
        for t in threads:
            t.join()
        assert errors == []
        assert [k.state for k in provider.keks() if k.purpose == "data"].count("primary") == 1


# -- keyring file ------------------------------------------------------------------------------


@pytest.fixture
def keyring(tmp_path: Path) -> FileKeyProvider:
    return FileKeyProvider.create(tmp_path / "keys" / "keyring.json", PASS, scrypt_n=FAST_N)


def _doc(p: FileKeyProvider) -> dict[str, Any]:
    return json.loads(p.path.read_text())  # type: ignore[no-any-return]


def _write_doc(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2))


def _open_error(path: Path, passphrase: str = PASS) -> KeyManagementError:
    with pytest.raises(KeyManagementError) as exc:
        FileKeyProvider.open(path, passphrase)
    return exc.value


def test_file_round_trip_across_instances(keyring: FileKeyProvider) -> None:
    wrapped = keyring.wrap(KEY, context=CTX)
    again = FileKeyProvider.open(keyring.path, PASS)
    assert again.unwrap(wrapped, context=CTX) == KEY
    assert again.keks() == keyring.keks()
    assert again.name == keyring.name == f"file:{keyring.path}"


def test_file_is_authenticated_json_without_secrets_in_clear(keyring: FileKeyProvider) -> None:
    text = keyring.path.read_text()
    doc = json.loads(text)
    assert set(doc) == {"format", "version", "kdf", "aead", "keyring"}
    assert doc["format"] == "riskguard-keyring" and doc["version"] == 1
    assert doc["kdf"]["name"] == "scrypt"
    assert (doc["kdf"]["n"], doc["kdf"]["r"], doc["kdf"]["p"]) == (FAST_N, 8, 1)
    assert doc["aead"]["name"] == "AES-256-GCM"
    assert PASS not in text
    for kek in keyring._keks.values():
        assert kek.material is not None
        assert base64.urlsafe_b64encode(bytes(kek.material)).decode().rstrip("=") not in text
        assert kek.id not in text  # even the ids and states are inside the blob


def test_file_and_lock_are_mode_0600(keyring: FileKeyProvider) -> None:
    assert keyring.path.stat().st_mode & 0o777 == 0o600
    keyring.rotate()
    assert keyring.path.stat().st_mode & 0o777 == 0o600
    lock = keyring.path.with_name(keyring.path.name + ".lock")
    assert lock.stat().st_mode & 0o777 == 0o600


def test_wrong_passphrase(keyring: FileKeyProvider) -> None:
    err = _open_error(keyring.path, "not the passphrase")
    assert err.message == "cannot open the keyring: wrong passphrase, or the file was modified"
    assert err.hint is not None and str(keyring.path) in err.hint
    assert "not the passphrase" not in err.diagnostics()


@pytest.mark.parametrize(
    "tamper",
    [
        "flip-blob-byte",
        "flip-last-tag-byte",
        "edit-nonce",
        "edit-scrypt-r",
        "edit-scrypt-n",
        "edit-salt",
        "add-header-field",
        "splice-older-blob",
    ],
)
def test_tampered_file_does_not_open(keyring: FileKeyProvider, tamper: str) -> None:
    older = _doc(keyring)
    keyring.rotate()
    doc = _doc(keyring)
    blob = base64.urlsafe_b64decode(doc["keyring"] + "==")
    if tamper == "flip-blob-byte":
        blob = blob[:10] + bytes((blob[10] ^ 1,)) + blob[11:]
        doc["keyring"] = base64.urlsafe_b64encode(blob).decode()
    elif tamper == "flip-last-tag-byte":
        blob = blob[:-1] + bytes((blob[-1] ^ 0x80,))
        doc["keyring"] = base64.urlsafe_b64encode(blob).decode()
    elif tamper == "edit-nonce":
        doc["aead"]["nonce"] = base64.urlsafe_b64encode(bytes(12)).decode()
    elif tamper == "edit-scrypt-r":
        doc["kdf"]["r"] = 9
    elif tamper == "edit-scrypt-n":
        doc["kdf"]["n"] = FAST_N * 2
    elif tamper == "edit-salt":
        doc["kdf"]["salt"] = base64.urlsafe_b64encode(bytes(16)).decode()
    elif tamper == "add-header-field":
        doc["states"] = {"k000000000000": "primary"}
    else:  # the blob of an older generation under the current header
        doc["keyring"] = older["keyring"]
    _write_doc(keyring.path, doc)
    err = _open_error(keyring.path)
    assert err.message == "cannot open the keyring: wrong passphrase, or the file was modified"


_GOOD_KEK = {
    "id": "k1",
    "purpose": "data",
    "state": "primary",
    "created": None,
    "destroyed": None,
    "key": "A" * 43,
}


@pytest.mark.parametrize(
    "inner",
    [
        {"generation": 1, "keks": [{"id": "k1", "state": "primary"}]},
        {"generation": 1, "keks": [{**_GOOD_KEK, "state": "retired"}]},
        {"generation": 1, "keks": [{**_GOOD_KEK, "state": "destroyed"}]},
        {"generation": 1, "keks": [{**_GOOD_KEK, "key": "AAAA"}]},
        {"generation": 1, "keks": [{**_GOOD_KEK, "id": "k 1"}]},
        {"generation": 1, "keks": [{**_GOOD_KEK, "purpose": "Data"}]},
        {"generation": "one", "keks": []},
    ],
    ids=["fields", "state", "material", "key-length", "id", "purpose", "generation"],
)
def test_states_cannot_be_edited_without_the_passphrase(
    keyring: FileKeyProvider, inner: dict[str, Any]
) -> None:
    """An insider with the passphrase could re-encrypt; without it the only levers are the
    clear header and the ciphertext, both covered by the tag (see the parametrised test).
    Here: a correctly encrypted payload whose contents are not a keyring is refused too."""
    doc = _doc(keyring)
    kdf = _Kdf(doc["kdf"]["n"], doc["kdf"]["r"], doc["kdf"]["p"], _ub64(doc["kdf"]["salt"]))
    header = {k: v for k, v in doc.items() if k != "keyring"}
    FileKeyProvider.open(keyring.path, PASS)  # a valid inner payload opens (control)
    payload = _canonical(inner)
    sealed = AESGCM(kdf.derive(PASS.encode())).encrypt(
        _ub64(doc["aead"]["nonce"]),
        payload,
        b"riskguard/keyring-file/v1\x00" + _canonical(header),
    )
    doc["keyring"] = base64.urlsafe_b64encode(sealed).decode()
    _write_doc(keyring.path, doc)
    err = _open_error(keyring.path)
    assert "decrypted, but its contents are not a valid keyring" in err.message
    assert "k1" not in err.message and "AAAA" not in err.message


def _ub64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_restored_old_keyring_still_holds_destroyed_keks(keyring: FileKeyProvider) -> None:
    """Why keyring backups must be kept apart from database backups and expired: a copy of
    the file made before a destroy still opens and still holds the KEK."""
    wrapped = keyring.wrap(KEY, context=CTX)
    backup = keyring.path.read_bytes()
    keyring.rotate()
    keyring.destroy(wrapped_kek_id(wrapped))
    with pytest.raises(KekDestroyed):
        keyring.unwrap(wrapped, context=CTX)
    keyring.path.write_bytes(backup)
    assert FileKeyProvider.open(keyring.path, PASS).unwrap(wrapped, context=CTX) == KEY


def test_truncated_file_names_the_line(keyring: FileKeyProvider) -> None:
    text = keyring.path.read_text()
    keyring.path.write_text(text[: len(text) // 2])
    err = _open_error(keyring.path)
    assert str(keyring.path) in err.message
    assert "is not valid JSON" in err.message
    assert re.search(r"at line \d+, column \d+", err.message)


def test_json_syntax_error_line(keyring: FileKeyProvider) -> None:
    lines = keyring.path.read_text().splitlines()
    assert lines[2].strip() == '"version": 1,'
    lines[2] = lines[2].rstrip(",")  # the error is found on the next key, line 4
    keyring.path.write_text("\n".join(lines))
    err = _open_error(keyring.path)
    assert "at line 4, column 3" in err.message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("kdf"), "is missing 'kdf'"),
        (lambda d: d.pop("keyring"), "is missing 'keyring'"),
        (lambda d: d["kdf"].pop("salt"), "is missing 'salt' in its header"),
        (lambda d: d.update(version=2), "has format version 2; this riskguard reads version 1"),
        (lambda d: d.update(format="other"), "is not a riskguard keyring"),
        (lambda d: d["kdf"].update(n=2**10), "scrypt n must be a power of two"),
        (lambda d: d["kdf"].update(n=2**30), "scrypt n must be a power of two"),
        (lambda d: d["kdf"].update(n="16384"), "must be integers"),
        (lambda d: d["kdf"].update(p=99), "scrypt r must be 1..32 and p 1..16"),
        (lambda d: d["kdf"].update(salt="!!"), "has an invalid header"),
        (lambda d: d["kdf"].update(salt="AAAA"), "salt must be 16 to 64 bytes"),
        (lambda d: d["kdf"].update(name="pbkdf2"), "'kdf' must be scrypt"),
        (lambda d: d["aead"].update(name="AES-128-GCM"), "'aead' must be AES-256-GCM"),
        (lambda d: d["aead"].update(nonce="AAAA"), "nonce must be 12 bytes"),
        (lambda d: d.update(keyring="AAAA"), "is truncated"),
    ],
)
def test_malformed_header_is_named(
    keyring: FileKeyProvider, edit: Callable[[dict[str, Any]], object], expected: str
) -> None:
    doc = _doc(keyring)
    edit(doc)
    _write_doc(keyring.path, doc)
    err = _open_error(keyring.path)
    assert expected in err.message
    assert str(keyring.path) in err.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[1, 2]", "is not a JSON object"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b"", "is not valid JSON"),
        (b" " * (1 << 20) + b"{}", "is larger than"),
    ],
)
def test_not_a_keyring(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    assert expected in _open_error(path).message


def test_unreadable_or_unwritable_paths(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    assert "cannot be read" in _open_error(tmp_path / "dir.json").message
    (tmp_path / "plain-file").write_text("")
    with pytest.raises(KeyManagementError, match="cannot be written"):
        FileKeyProvider.create(tmp_path / "plain-file" / "k.json", PASS, scrypt_n=FAST_N)


def test_missing_file(tmp_path: Path) -> None:
    err = _open_error(tmp_path / "nope.json")
    assert "does not exist" in err.message
    assert err.hint is not None and "FileKeyProvider.create" in err.hint


def test_create_refuses_to_overwrite(keyring: FileKeyProvider) -> None:
    before = keyring.path.read_bytes()
    with pytest.raises(KeyManagementError, match="already exists; refusing to overwrite"):
        FileKeyProvider.create(keyring.path, PASS, scrypt_n=FAST_N)
    assert keyring.path.read_bytes() == before


@pytest.mark.parametrize("n", [2**13, 2**14 + 1, 2**21, "16384"])
def test_create_checks_scrypt_n(tmp_path: Path, n: Any) -> None:
    with pytest.raises(KeyManagementError, match="scrypt n must be a power of two"):
        FileKeyProvider.create(tmp_path / "k.json", PASS, scrypt_n=n)
    assert not (tmp_path / "k.json").exists()


def test_short_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyManagementError, match="too short") as exc:
        FileKeyProvider.create(tmp_path / "k.json", "short")
    assert "short" not in exc.value.message.replace("too short", "")
    with pytest.raises(TypeError):
        FileKeyProvider.create(tmp_path / "k.json", 12345678)  # type: ignore[arg-type]


def test_passphrase_is_unicode_normalised(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9-passphrase", "cafe\u0301-passphrase"
    p = FileKeyProvider.create(tmp_path / "k.json", composed, scrypt_n=FAST_N)
    assert FileKeyProvider.open(p.path, decomposed).keks() == p.keks()
    assert FileKeyProvider.open(p.path, composed.encode()).keks() == p.keks()


def test_default_scrypt_cost_is_recorded(tmp_path: Path) -> None:
    p = FileKeyProvider.create(tmp_path / "k.json", PASS)
    assert _doc(p)["kdf"]["n"] == 2**16


def test_crash_during_replace_leaves_the_old_file(
    keyring: FileKeyProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = keyring.path.read_bytes()
    states = keyring.keks()
    wrapped = keyring.wrap(KEY, context=CTX)

    def crash(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error (simulated crash)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyManagementError, match="cannot be written") as exc:
        keyring.rotate()
    assert exc.value.hint is not None and "intact" in exc.value.hint
    with pytest.raises(KeyManagementError):
        keyring.destroy(_primary(keyring, "subject"))  # refused before any write
    with pytest.raises(KeyManagementError, match="cannot be written"):
        keyring.change_passphrase("another passphrase")
    monkeypatch.undo()
    assert keyring.path.read_bytes() == before
    assert sorted(os.listdir(keyring.path.parent)) == ["keyring.json", "keyring.json.lock"]
    assert keyring.keks() == states  # the failed change never became live
    assert keyring.unwrap(wrapped, context=CTX) == KEY
    assert FileKeyProvider.open(keyring.path, PASS).keks() == states
    keyring.rotate()  # and it works once the disk does
    assert len(FileKeyProvider.open(keyring.path, PASS).keks()) == 3


def test_two_instances_see_each_others_changes(keyring: FileKeyProvider) -> None:
    other = FileKeyProvider.open(keyring.path, PASS)
    old_wrapped = other.wrap(KEY, context=CTX)
    old = wrapped_kek_id(old_wrapped)
    new = keyring.rotate("data")
    # the other instance's next operation sees the rotation: it wraps under the new KEK
    fresh = other.wrap(KEY, context=CTX)
    assert wrapped_kek_id(fresh) == new
    assert keyring.unwrap(fresh, context=CTX) == KEY
    keyring.destroy(old)
    with pytest.raises(KekDestroyed):
        other.unwrap(old_wrapped, context=CTX)
    assert other.keks() == keyring.keks()


def test_interleaved_changes_are_not_lost(keyring: FileKeyProvider) -> None:
    other = FileKeyProvider.open(keyring.path, PASS)
    a = keyring.rotate("data")
    b = other.rotate("subject")  # re-reads before changing: a survives
    c = keyring.rotate("data")
    ids = {k.id: k.state for k in FileKeyProvider.open(keyring.path, PASS).keks()}
    assert (ids[a], ids[b], ids[c]) == ("decrypt_only", "primary", "primary")
    assert len(ids) == 5


def test_two_processes_rotating_at_once_lose_nothing(keyring: FileKeyProvider) -> None:
    code = (
        "import sys\n"
        "from riskguard.crypto._providers import FileKeyProvider\n"
        "p = FileKeyProvider.open(sys.argv[1], sys.argv[2])\n"
        "print(','.join(p.rotate(sys.argv[3]) for _ in range(5)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(keyring.path), PASS, purpose],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        for purpose in ("data", "data", "subject")
    ]
    made: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        made += out.decode().strip().split(",")
    keks = keyring.keks()
    assert {k.id for k in keks} >= set(made)
    assert len(keks) == 2 + 15
    for purpose in ("data", "subject"):
        assert [k.state for k in keks if k.purpose == purpose].count("primary") == 1


def test_change_passphrase(keyring: FileKeyProvider) -> None:
    other = FileKeyProvider.open(keyring.path, PASS)
    wrapped = keyring.wrap(KEY, context=CTX)
    old_salt = _doc(keyring)["kdf"]["salt"]
    keyring.change_passphrase("a new long passphrase", scrypt_n=FAST_N * 2)
    doc = _doc(keyring)
    assert doc["kdf"]["salt"] != old_salt and doc["kdf"]["n"] == FAST_N * 2
    assert _open_error(keyring.path).message.startswith("cannot open the keyring")
    reopened = FileKeyProvider.open(keyring.path, "a new long passphrase")
    assert reopened.unwrap(wrapped, context=CTX) == KEY
    assert keyring.unwrap(wrapped, context=CTX) == KEY
    with pytest.raises(KeyManagementError, match="re-encrypted under another passphrase"):
        other.unwrap(wrapped, context=CTX)
    with pytest.raises(KeyManagementError, match="scrypt n"):
        keyring.change_passphrase("yet another passphrase", scrypt_n=1000)


def test_vanished_file_is_reported(keyring: FileKeyProvider) -> None:
    keyring.path.unlink()
    with pytest.raises(KeyManagementError, match="cannot be read"):
        keyring.wrap(KEY, context=CTX)


def test_from_env(keyring: FileKeyProvider) -> None:
    env = {"RISKGUARD_KEYRING_PASSPHRASE": PASS}
    assert FileKeyProvider.from_env(keyring.path, environ=env).keks() == keyring.keks()
    with pytest.raises(KeyManagementError, match="MY_PASS is not set") as exc:
        FileKeyProvider.from_env(keyring.path, "MY_PASS", environ=env)
    assert exc.value.hint is not None and "MY_PASS" in exc.value.hint


def test_no_secret_reaches_messages_or_logs(tmp_path: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message} {extra}")
    logger.enable("riskguard")
    try:
        p = FileKeyProvider.create(tmp_path / "k.json", PASS, scrypt_n=FAST_N)
        wrapped = p.wrap(KEY, context=CTX)
        old = wrapped_kek_id(wrapped)
        p.rotate()
        p.destroy(old)
        p.path.chmod(0o644)
        FileKeyProvider.open(p.path, PASS)
        errors: list[KeyManagementError] = []
        for action in (
            lambda: FileKeyProvider.open(p.path, PASS + "x"),
            lambda: p.unwrap(wrapped, context=CTX),
            lambda: p.unwrap(p.wrap(KEY, context=CTX), context=b"other"),
            lambda: EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK[:-3]}),
            lambda: EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK + "*"}),
        ):
            with pytest.raises(KeyManagementError) as exc:
                action()
            errors.append(exc.value)
    finally:
        logger.disable("riskguard")
        logger.remove(sink)
    assert any("readable by group or others" in line for line in lines)
    assert any("KEK destroyed" in line for line in lines)
    secrets = [PASS, SECRET_KEK, SECRET_KEK[:-3], KEY.hex(), base64.b64encode(KEY).decode()]
    for kek in p._keks.values():
        if kek.material is not None:
            secrets.append(base64.urlsafe_b64encode(bytes(kek.material)).decode().rstrip("="))
    texts = lines + [e.diagnostics() for e in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- environment ------------------------------------------------------------------------------


def test_env_rotation_by_deployment() -> None:
    before = EnvKeyProvider(environ={"RISKGUARD_KEK": OLD_KEK})
    wrapped = before.wrap(KEY, context=CTX, purpose="subject")
    after = EnvKeyProvider(
        environ={"RISKGUARD_KEK": SECRET_KEK, "RISKGUARD_KEK_PREVIOUS": f" {OLD_KEK} ,"}
    )
    assert after.unwrap(wrapped, context=CTX) == KEY
    assert wrapped_kek_id(after.wrap(KEY, context=CTX)) != wrapped_kek_id(wrapped)
    states = {k.id: (k.state, k.purpose, k.created) for k in after.keks()}
    assert states == {
        _fingerprint_id(_ub64(SECRET_KEK)): ("primary", "*", None),
        wrapped_kek_id(wrapped): ("decrypt_only", "*", None),
    }
    assert after.name == "env:RISKGUARD_KEK"
    forgotten = EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK})
    with pytest.raises(WrappedKeyError) as exc:
        forgotten.unwrap(wrapped, context=CTX)
    assert exc.value.check == "unknown_kek"


def test_env_kek_id_is_a_stable_fingerprint_not_the_key() -> None:
    a = EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK})
    b = EnvKeyProvider("K", environ={"K": base64.b64encode(_ub64(SECRET_KEK)).decode()})
    assert a.keks()[0].id == b.keks()[0].id
    assert re.fullmatch(r"k[0-9a-f]{12}", a.keks()[0].id)
    assert a.keks()[0].id[1:] not in _ub64(SECRET_KEK).hex()


def test_env_refuses_rotate_and_destroy() -> None:
    p = EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK})
    with pytest.raises(KeyManagementError, match="cannot rotate") as exc:
        p.rotate("subject")
    assert exc.value.hint is not None and "RISKGUARD_KEK" in exc.value.hint
    with pytest.raises(KeyManagementError, match="crypto-shredding against old backups"):
        p.destroy(p.keks()[0].id)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "RISKGUARD_KEK is not set"),
        ({"RISKGUARD_KEK": "  "}, "RISKGUARD_KEK is not set"),
        ({"RISKGUARD_KEK": "not*base64!"}, "RISKGUARD_KEK is not valid base64url"),
        ({"RISKGUARD_KEK": "QUJD"}, "RISKGUARD_KEK must hold 32 bytes, not 3"),
        ({"RISKGUARD_KEK": "QUJDR"}, "RISKGUARD_KEK is not valid base64url"),
        (
            {"RISKGUARD_KEK": SECRET_KEK, "RISKGUARD_KEK_PREVIOUS": f"{OLD_KEK},bad?value"},
            "RISKGUARD_KEK_PREVIOUS (item 2) is not valid base64url",
        ),
    ],
)
def test_env_bad_values_name_the_variable_never_the_value(
    environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(KeyManagementError) as exc:
        EnvKeyProvider(environ=environ)
    assert expected in exc.value.message
    assert exc.value.hint is not None and "urlsafe_b64encode" in exc.value.hint
    for value in environ.values():
        if value.strip():
            for part in value.split(","):
                assert part not in exc.value.diagnostics()


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGUARD_KEK", SECRET_KEK)
    monkeypatch.delenv("RISKGUARD_KEK_PREVIOUS", raising=False)
    assert len(EnvKeyProvider().keks()) == 1


def test_env_and_transit_blobs_are_not_interchangeable() -> None:
    env = EnvKeyProvider(environ={"RISKGUARD_KEK": SECRET_KEK})
    transit = TransitKeyProvider(FakeTransit())
    with pytest.raises(WrappedKeyError, match="Transit provider") as exc:
        env.unwrap(transit.wrap(KEY, context=CTX), context=CTX)
    assert exc.value.check == "format"
    with pytest.raises(WrappedKeyError, match="local KEK"):
        transit.unwrap(env.wrap(KEY, context=CTX), context=CTX)
    with pytest.raises(WrappedKeyError, match="Transit provider"):
        MemoryKeyProvider().unwrap(transit.wrap(KEY, context=CTX), context=CTX)


# -- Transit with the FakeTransit double ------------------------------------------------------


def test_transit_calls_the_kms_once_per_operation() -> None:
    fake = FakeTransit()
    p = TransitKeyProvider(fake)
    assert isinstance(fake, TransitClient)
    wrapped = p.wrap(KEY, context=CTX)
    assert wrapped_kek_id(wrapped) == "riskguard-data:v1"
    assert p.unwrap(wrapped, context=CTX) == KEY
    assert fake.calls == {"encrypt": 1, "decrypt": 1}
    assert p.name == "transit:riskguard-data"


def test_transit_binds_context_even_if_the_kms_does_not() -> None:
    fake = FakeTransit(bind_context=False)
    p = TransitKeyProvider(fake)
    wrapped = p.wrap(KEY, context=b"dek:1:1")
    with pytest.raises(WrappedKeyError) as exc:
        p.unwrap(wrapped, context=b"dek:1:2")
    assert exc.value.check == "tag"
    assert fake.calls["decrypt"] == 1  # the KMS answered; the provider's digest refused


def test_transit_destroys_from_the_oldest_version() -> None:
    fake = FakeTransit()
    p = TransitKeyProvider(fake)
    v1 = p.wrap(KEY, context=CTX, purpose="subject")
    assert p.rotate("subject") == "riskguard-subject:v2"
    v2 = p.wrap(KEY, context=CTX, purpose="subject")
    assert p.rotate("subject") == "riskguard-subject:v3"
    with pytest.raises(KeyManagementError, match="trims from the oldest") as exc:
        p.destroy("riskguard-subject:v2")
    assert exc.value.hint is not None and "ascending" in exc.value.hint
    p.destroy("riskguard-subject:v1")
    assert not fake.has_material("riskguard-subject", 1)
    with pytest.raises(KekDestroyed):
        p.unwrap(v1, context=CTX)
    assert p.unwrap(v2, context=CTX) == KEY
    p.destroy("riskguard-subject:v2")
    p.destroy("riskguard-subject:v1")  # already gone: nothing happens
    with pytest.raises(KekDestroyed):
        p.unwrap(v2, context=CTX)
    states = [(k.id, k.state) for k in p.keks() if k.purpose == "subject"]
    assert states == [
        ("riskguard-subject:v1", "destroyed"),
        ("riskguard-subject:v2", "destroyed"),
        ("riskguard-subject:v3", "primary"),
    ]
    with pytest.raises(KeyManagementError, match="no KEK"):
        p.destroy("riskguard-subject:v9")


def test_transit_unknown_version_and_key() -> None:
    p = TransitKeyProvider(FakeTransit())
    wrapped = p.wrap(KEY, context=CTX)
    forged = wrapped.replace(b"riskguard-data:v1", b"riskguard-data:v7").replace(
        b"vault:v1:", b"vault:v7:"
    )
    with pytest.raises(WrappedKeyError) as exc:
        p.unwrap(forged, context=CTX)
    assert exc.value.check == "unknown_kek"
    mismatch = wrapped.replace(b"vault:v1:", b"vault:v2:")
    with pytest.raises(WrappedKeyError, match="malformed"):
        p.unwrap(mismatch, context=CTX)
    with pytest.raises(KeyManagementError, match="no Transit key for purpose 'audit'"):
        p.wrap(KEY, context=CTX, purpose="audit")
    with pytest.raises(KeyManagementError, match="no KEK"):
        p.destroy("not-a-kek-id")


def test_transit_failure_that_is_not_a_destroy_is_a_tag_error() -> None:
    fake = FakeTransit()
    p = TransitKeyProvider(fake)
    wrapped = bytearray(p.wrap(KEY, context=CTX))
    wrapped[-5] = ord("A") if wrapped[-5] != ord("A") else ord("B")
    with pytest.raises(WrappedKeyError) as exc:
        p.unwrap(bytes(wrapped), context=CTX)
    assert exc.value.check == "tag"
    assert isinstance(exc.value.__cause__, TransitError)
    assert fake.calls["versions"] == 1  # consulted only on the failure path


def test_transit_failure_when_the_version_check_fails_too() -> None:
    class Down(FakeTransit):
        def versions(self, key_name: str) -> TransitKeyVersions:
            raise TransitError("unreachable", key_id=key_name)

    p = TransitKeyProvider(Down())
    with pytest.raises(WrappedKeyError) as exc:
        p.unwrap(p.wrap(KEY, context=CTX), context=b"other")
    assert exc.value.check == "tag"


def test_transit_malformed_service_answer() -> None:
    class Broken(FakeTransit):
        def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
            return "not-a-vault-ciphertext"

    with pytest.raises(TransitError, match="malformed ciphertext"):
        TransitKeyProvider(Broken()).wrap(KEY, context=CTX)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({}, "key_names is empty"),
        ({"data": "same", "subject": "same"}, "its own Transit key name"),
        ({"data": "bad name"}, "invalid Transit key name"),
        ({"data": "with:colon"}, "invalid Transit key name"),
        ({"Data": "ok"}, "invalid KEK purpose"),
    ],
)
def test_transit_key_names_are_checked(names: dict[str, str], expected: str) -> None:
    with pytest.raises(KeyManagementError, match=expected):
        TransitKeyProvider(FakeTransit(), key_names=names)


def test_transit_custom_names() -> None:
    p = TransitKeyProvider(
        FakeTransit(keys=["pii"]), key_names={"data": "pii", "subject": "shred"}, name="kms"
    )
    assert p.name == "kms"
    assert wrapped_kek_id(p.wrap(KEY, context=CTX, purpose="subject")) == "shred:v1"


# -- Vault over HTTP (MockTransport) ----------------------------------------------------------


@pytest.fixture
def vault() -> Iterator[tuple[TransitKeyProvider, VaultEmulator]]:
    emulator = VaultEmulator(FakeTransit())
    yield TransitKeyProvider(vault_client(emulator)), emulator


def test_vault_request_shapes(vault: tuple[TransitKeyProvider, VaultEmulator]) -> None:
    p, emu = vault
    wrapped = p.wrap(KEY, context=CTX)
    method, path, body = emu.requests[-1]
    assert (method, path) == ("POST", "/v1/transit/encrypt/riskguard-data")
    assert body is not None and set(body) == {"plaintext", "associated_data"}
    assert _b64(body["plaintext"]).endswith(KEY) and len(_b64(body["plaintext"])) == 64
    assert _b64(body["associated_data"]).endswith(CTX)
    assert emu.headers[-1]["X-Vault-Token"] == TOKEN
    assert emu.headers[-1]["content-type"] == "application/json"

    assert p.unwrap(wrapped, context=CTX) == KEY
    method, path, body = emu.requests[-1]
    assert (method, path) == ("POST", "/v1/transit/decrypt/riskguard-data")
    assert body is not None and body["ciphertext"].startswith("vault:v1:")
    assert set(body) == {"ciphertext", "associated_data"}

    assert p.rotate("data") == "riskguard-data:v2"
    assert emu.requests[-1][:2] == ("POST", "/v1/transit/keys/riskguard-data/rotate")

    emu.requests.clear()
    p.destroy("riskguard-data:v1")
    assert emu.requests == [
        ("GET", "/v1/transit/keys/riskguard-data", None),  # the provider's window check
        ("GET", "/v1/transit/keys/riskguard-data", None),  # the client's current minimums
        (
            "POST",
            "/v1/transit/keys/riskguard-data/config",
            {"min_decryption_version": 2, "min_encryption_version": 2},
        ),
        ("POST", "/v1/transit/keys/riskguard-data/trim", {"min_available_version": 2}),
    ]
    with pytest.raises(KekDestroyed):
        p.unwrap(wrapped, context=CTX)
    keks = [(k.id, k.state) for k in p.keks() if k.purpose == "data"]
    assert keks == [("riskguard-data:v1", "destroyed"), ("riskguard-data:v2", "primary")]
    created = {k.id: k.created for k in p.keks()}
    assert created["riskguard-data:v2"] == datetime(2026, 1, 3, tzinfo=UTC)


def test_vault_context_mismatch_is_refused_by_vault(
    vault: tuple[TransitKeyProvider, VaultEmulator],
) -> None:
    p, emu = vault
    wrapped = p.wrap(KEY, context=b"dek:1:1")
    with pytest.raises(WrappedKeyError) as exc:
        p.unwrap(wrapped, context=b"dek:1:2")
    assert exc.value.check == "tag"
    assert "message authentication failed" in str(exc.value.__cause__)
    assert emu.backend.calls["decrypt"] == 1


def test_vault_rotate_on_an_older_vault_answering_204() -> None:
    emulator = VaultEmulator(FakeTransit(), rotate_returns_data=False)
    client = vault_client(emulator)
    assert client.rotate("riskguard-data") == 2
    assert emulator.requests[-1][:2] == ("GET", "/v1/transit/keys/riskguard-data")


@pytest.mark.parametrize(
    ("binding", "field"),
    [("context", "context"), ("none", None), ("associated_data", "associated_data")],
)
def test_vault_binding_modes(binding: Any, field: str | None) -> None:
    emulator = VaultEmulator(FakeTransit())
    client = vault_client(emulator, binding=binding)
    p = TransitKeyProvider(client)
    assert p.unwrap(p.wrap(KEY, context=CTX), context=CTX) == KEY
    for _, _, body in emulator.requests:
        assert body is not None
        assert {"context", "associated_data"} & set(body) == ({field} if field else set())


def test_vault_namespace_header() -> None:
    emulator = VaultEmulator(FakeTransit())
    client = vault_client(emulator, namespace="team-a")
    client.versions("riskguard-data")
    assert emulator.headers[-1]["X-Vault-Namespace"] == "team-a"


def test_vault_errors_are_transit_errors_without_the_token() -> None:
    emulator = VaultEmulator(FakeTransit())
    http = httpx.Client(transport=httpx.MockTransport(emulator))
    bad = VaultTransitClient("https://vault.invalid", "hvs.wrong-token", http=http)
    with pytest.raises(TransitError, match="HTTP 403: permission denied") as exc:
        bad.encrypt("riskguard-data", KEY, CTX)
    assert "hvs.wrong-token" not in exc.value.diagnostics()
    assert "hvs.wrong-token" not in repr(bad) and TOKEN not in repr(vault_client(emulator))
    with pytest.raises(TransitError, match="HTTP 400: encryption key not found"):
        vault_client(emulator).decrypt("missing", "vault:v1:AAAA", b"")
    with pytest.raises(TransitError, match="HTTP 404: Not Found"):
        vault_client(emulator).versions("a/b")


def test_vault_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransitError, match="cannot reach Vault for encrypt") as exc:
        vault_client(refuse).encrypt("riskguard-data", KEY, CTX)
    assert exc.value.hint is not None and "vault.invalid" in exc.value.hint


@pytest.mark.parametrize(
    ("answer", "call", "expected"),
    [
        (httpx.Response(200, json={"data": {}}), "encrypt", "has no ciphertext"),
        (httpx.Response(200, json={"data": {"plaintext": "!!"}}), "decrypt", "malformed"),
        (httpx.Response(200, json={"data": {"keys": {}}}), "versions", "malformed"),
        (httpx.Response(200, text="<html>"), "versions", "has no data"),
        (httpx.Response(502, text="bad gateway"), "versions", "HTTP 502: Bad Gateway"),
    ],
)
def test_vault_malformed_answers(answer: httpx.Response, call: str, expected: str) -> None:
    client = vault_client(lambda request: answer)
    calls: dict[str, Callable[[], object]] = {
        "encrypt": lambda: client.encrypt("k", KEY, CTX),
        "decrypt": lambda: client.decrypt("k", "vault:v1:AAAA", CTX),
        "versions": lambda: client.versions("k"),
    }
    with pytest.raises(TransitError, match=expected):
        calls[call]()


def test_vault_times_in_rfc3339_are_read() -> None:
    data = {
        "latest_version": 2,
        "keys": {"1": "2026-02-01T00:00:00Z", "2": {"creation_time": "2026-03-01T08:00:00+08:00"}},
    }
    client = vault_client(lambda request: _data(data))
    info = client.versions("k")
    assert info.created == {
        1: datetime(2026, 2, 1, tzinfo=UTC),
        2: datetime(2026, 3, 1, tzinfo=UTC),
    }
    assert (info.min_available, info.min_decryption) == (0, 1)


def test_vault_client_without_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ImportError, match=r"riskguard\[vault\]"):
        VaultTransitClient("https://vault.invalid", TOKEN)


# -- settings ---------------------------------------------------------------------------------


def test_provider_from_settings(tmp_path: Path) -> None:
    FileKeyProvider.create(tmp_path / "keys" / "keyring.json", PASS, scrypt_n=FAST_N)
    file_settings = Settings.model_validate({"base_dir": tmp_path})
    p = provider_from_settings(file_settings, environ={"RISKGUARD_KEYRING_PASSPHRASE": PASS})
    assert isinstance(p, FileKeyProvider)
    assert p.path == tmp_path / "keys" / "keyring.json"
    with pytest.raises(KeyManagementError, match="RISKGUARD_KEYRING_PASSPHRASE is not set"):
        provider_from_settings(file_settings, environ={})

    env_settings = Settings.model_validate(
        {"keys": {"provider": "env", "kek_env": "MY_KEK"}, "base_dir": tmp_path}
    )
    e = provider_from_settings(
        env_settings, environ={"MY_KEK": SECRET_KEK, "MY_KEK_PREVIOUS": OLD_KEK}
    )
    assert isinstance(e, EnvKeyProvider) and e.name == "env:MY_KEK"
    assert [k.state for k in e.keks()] == ["primary", "decrypt_only"]

    memory = Settings.model_validate({"keys": {"provider": "memory"}})
    assert isinstance(provider_from_settings(memory), MemoryKeyProvider)
