"""Key backup and restore: ``riskguard keys export`` / ``riskguard keys import``.

An export is one JSON document holding every keyset and key version of the keyring, each
data key re-encrypted under an *export key* derived from a passphrase (scrypt, then HKDF
into an encryption key and a MAC key)::

    {"format": "riskguard-key-export", "version": 1, "created": <epoch s>,
     "kdf": {"name": "scrypt", "salt": <b64url>, "n": 131072, "r": 8, "p": 1},
     "keysets": [{"id", "name", "kind", "subject", "state", "primary_version",
                  "min_decryption_version", "created_at", "rotated_at"}, …],
     "keys": [{"keyset_id", "version", "state", "created_at", "changed_at",
               "key": <b64url nonce(12) || AES-256-GCM(dek), AAD "riskguard/export/1:<ks>:<v>">
                      or null when destroyed}, …],
     "mac": <hex HMAC-SHA256 over the canonical JSON of everything else>}

The MAC covers states as well as keys, so an edited export is refused whole. Destroyed
keys and shredded subjects travel as tombstones (no key material). Import never
resurrects: a key destroyed in the target stays destroyed, a shredded subject stays
shredded, whatever the export says. Import writes in one transaction (all or nothing) and
re-wraps each data key under the target's current KEK.

An export taken *before* a subject was shredded still holds that subject's key: key
exports are secrets with a short life; keep only the newest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from riskguard.crypto._kek import KekDestroyed
from riskguard.crypto._keyring import Keyring, _kek_id, _wrap_context
from riskguard.crypto._tables import key_table, keyset_table
from riskguard.db import engine_kind, map_errors, write_transaction
from riskguard.errors import KeyManagementError
from riskguard.types import ResourceRef

__all__ = ["export_keys", "import_keys"]

_FORMAT = "riskguard-key-export"
_VERSION = 1
_SCRYPT = {"n": 2**17, "r": 8, "p": 1}
_MIN_N = 2**14
_MAX_N = 2**22
_MIN_PASSPHRASE = 12
_KEYSET_FIELDS = (
    "id", "name", "kind", "subject", "state", "primary_version", "min_decryption_version",
    "created_at", "rotated_at",
)  # fmt: skip
_KEY_FIELDS = ("keyset_id", "version", "state", "created_at", "changed_at")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise KeyManagementError(f"the export's {what} is not a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise KeyManagementError(f"the export's {what} is not base64url") from None


def _keys(passphrase: str, kdf: dict[str, Any]) -> tuple[AESGCM, bytes]:
    if len(passphrase) < _MIN_PASSPHRASE:
        raise KeyManagementError(
            f"the passphrase is shorter than {_MIN_PASSPHRASE} characters",
            hint="use a long random passphrase from a secret store",
        )
    salt = _unb64(kdf.get("salt"), "kdf salt")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (n, r, p))
    if not ints or not (_MIN_N <= n <= _MAX_N and 1 <= r <= 32 and 1 <= p <= 16):  # type: ignore[operator]
        # Checked before deriving: a crafted file must not pin the CPU or memory.
        raise KeyManagementError("the export's scrypt parameters are out of range")
    master = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))  # type: ignore[arg-type]
    okm = HKDF(hashes.SHA256(), 64, salt=None, info=b"riskguard/export/1").derive(master)
    return AESGCM(okm[:32]), okm[32:]


def _canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def export_keys(keyring: Keyring, passphrase: str, *, scrypt_n: int | None = None) -> bytes:
    """Every keyset and key version, the keys re-encrypted under ``passphrase``.
    Audited as ``key.export``.

    :raises KeyManagementError: a KEK cannot unwrap a key, or the passphrase is empty.
    """
    kdf = {"name": "scrypt", "salt": _b64(os.urandom(16)), **_SCRYPT}
    if scrypt_n is not None:
        kdf["n"] = scrypt_n
    aead, mac_key = _keys(passphrase, kdf)
    with map_errors(keyring.engine, "reading keys to export"), keyring.engine.connect() as conn:
        keysets = conn.execute(sa.select(keyset_table).order_by(keyset_table.c.id)).all()
        keys = conn.execute(
            sa.select(key_table).order_by(key_table.c.keyset_id, key_table.c.version)
        ).all()
    out_keys = []
    for k in keys:
        entry = {f: getattr(k, f) for f in _KEY_FIELDS}
        raw = None
        if k.wrapped is not None:
            try:
                raw = keyring.provider.unwrap(
                    bytes(k.wrapped), context=_wrap_context(k.keyset_id, k.version)
                )
            except KekDestroyed:
                # Wrapped under a KEK destroyed since (a database restored from before a
                # subject-KEK rotation): the key is gone; export it as a tombstone.
                entry["state"] = "destroyed"
        if raw is None:
            entry["key"] = None
        else:
            nonce = os.urandom(12)
            aad = b"riskguard/export/1:%d:%d" % (k.keyset_id, k.version)
            entry["key"] = _b64(nonce + aead.encrypt(nonce, raw, aad))
        out_keys.append(entry)
    doc: dict[str, Any] = {
        "format": _FORMAT,
        "version": _VERSION,
        "created": int(time.time()),
        "kdf": kdf,
        "keysets": [{f: getattr(s, f) for f in _KEYSET_FIELDS} for s in keysets],
        "keys": out_keys,
    }
    doc["mac"] = hmac.new(mac_key, _canonical(doc), hashlib.sha256).hexdigest()
    if keyring.audit is not None:
        keyring.audit.record(
            "key.export", "success", resource=ResourceRef("keyring"),
            details={"keysets": len(keysets), "keys": len(keys)},
        )  # fmt: skip
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def _parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise KeyManagementError("the key export is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise KeyManagementError(
            f"the key export is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise KeyManagementError("not a riskguard key export (format field missing or wrong)")
    if doc.get("version") != _VERSION:
        raise KeyManagementError(
            f"key export version {doc.get('version')!r} is not supported (this riskguard reads "
            f"version {_VERSION})"
        )
    for f, kind in (("kdf", dict), ("keysets", list), ("keys", list), ("mac", str)):
        if not isinstance(doc.get(f), kind):
            raise KeyManagementError(f"the key export's {f!r} is missing or malformed")
    return doc


def import_keys(keyring: Keyring, data: bytes, passphrase: str) -> dict[str, int]:
    """Restore an export into the keyring's tables, in one transaction. Audited as
    ``key.import``.

    :returns: counts: ``keysets_added``, ``keys_added``, ``kept_destroyed`` (keys the
        export had but the target has destroyed), ``unchanged``.
    :raises KeyManagementError: wrong passphrase or modified export (nothing written), a
        malformed export, or a keyset id that names a different keyset in the target.
    """
    doc = _parse(data)
    aead, mac_key = _keys(passphrase, doc["kdf"])
    expected = hmac.new(mac_key, _canonical(doc), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, doc["mac"]):
        raise KeyManagementError(
            "cannot open the key export: wrong passphrase, or the file was modified",
            hint="nothing was imported",
        )
    counts = {
        "keysets_added": 0, "keysets_merged": 0, "keys_added": 0, "states_advanced": 0,
        "kept_destroyed": 0, "unchanged": 0,
    }  # fmt: skip
    kinds: dict[int, str] = {}
    try:
        keysets = [{f: s[f] for f in _KEYSET_FIELDS} for s in doc["keysets"]]
        keys = [{**{f: k[f] for f in _KEY_FIELDS}, "key": k["key"]} for k in doc["keys"]]
    except (KeyError, TypeError) as exc:
        raise KeyManagementError(f"the key export lacks a field: {exc}") from None
    engine = keyring.engine
    with map_errors(engine, "importing keys"), write_transaction(engine) as conn:
        existing = {r.id: r for r in conn.execute(sa.select(keyset_table))}
        for s in keysets:
            kinds[s["id"]] = s["kind"]
            have = existing.get(s["id"])
            if have is None:
                conn.execute(keyset_table.insert().values(**s))
                counts["keysets_added"] += 1
            elif have.name != s["name"]:
                raise KeyManagementError(
                    f"keyset id {s['id']} is {have.name!r} here but {s['name']!r} in the export",
                    key_id=s["name"],
                    hint="import into an empty keyring, or the keyring the export came from",
                )
            else:
                counts["keysets_merged"] += _merge_keyset(conn, have, s)
        shredded = {
            r.id for r in conn.execute(sa.select(keyset_table.c.id, keyset_table.c.state))
            if r.state == "shredded"
        }  # fmt: skip
        have_keys = {
            (r.keyset_id, r.version): r.state
            for r in conn.execute(sa.select(key_table.c.keyset_id, key_table.c.version,
                                            key_table.c.state))
        }  # fmt: skip
        for k in keys:
            ident = (k["keyset_id"], k["version"])
            if ident in have_keys:
                here = have_keys[ident]
                if ident[0] in shredded and here != "destroyed":
                    here = "destroyed"  # merged above: the subject was shredded there
                if _FINALITY[k["state"]] > _FINALITY[here]:
                    # A version retired or destroyed after the target's backup was taken
                    # stays retired or destroyed: restoring never brings a key back.
                    _set_state(conn, ident, k["state"])
                    counts["states_advanced"] += 1
                elif here == "destroyed" and k["key"] is not None:
                    counts["kept_destroyed"] += 1
                else:
                    counts["unchanged"] += 1
                continue
            wrapped = kek = None
            state = k["state"]
            if k["key"] is not None and k["keyset_id"] not in shredded:
                blob = _unb64(k["key"], "key")
                aad = b"riskguard/export/1:%d:%d" % ident
                try:
                    raw = aead.decrypt(blob[:12], blob[12:], aad)
                except InvalidTag:
                    raise KeyManagementError(
                        f"key {ident[0]}/{ident[1]} in the export does not decrypt"
                    ) from None
                purpose = "subject" if kinds.get(ident[0]) == "subject" else "data"
                wrapped = keyring.provider.wrap(raw, context=_wrap_context(*ident), purpose=purpose)
                kek = _kek_id(wrapped)
            elif k["key"] is not None:
                state = "destroyed"
                counts["kept_destroyed"] += 1
            conn.execute(
                key_table.insert().values(
                    keyset_id=ident[0], version=ident[1], state=state, kek_id=kek,
                    wrapped=wrapped, created_at=k["created_at"], changed_at=k["changed_at"],
                )
            )  # fmt: skip
            counts["keys_added"] += 1
        if engine_kind(engine) == "postgresql":
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('rg_crypto_keyset', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM rg_crypto_keyset))"
            )
    keyring.invalidate()
    if keyring.audit is not None:
        keyring.audit.record(
            "key.import", "success", resource=ResourceRef("keyring"), details=counts
        )
    return counts


# How final a key state is: a merge only ever moves a version towards the end.
_FINALITY = {"primary": 0, "decrypt_only": 0, "disabled": 1, "destroyed": 2}


def _set_state(conn: Any, ident: tuple[int, int], state: str) -> None:
    values: dict[str, Any] = {"state": state}
    if state == "destroyed":
        values.update(wrapped=None, kek_id=None)
    conn.execute(
        key_table.update()
        .where(key_table.c.keyset_id == ident[0], key_table.c.version == ident[1])
        .values(**values)
    )


def _merge_keyset(conn: Any, have: Any, exported: dict[str, Any]) -> int:
    """Merge an exported keyset into the same keyset here, towards the later state: the
    higher ``min_decryption_version``, the primary promoted last, shredded if either is.
    :returns: 1 when anything changed."""
    k = key_table.c
    values: dict[str, Any] = {}
    if exported["state"] == "shredded" and have.state != "shredded":
        values.update(state="shredded", primary_version=None)
        conn.execute(
            key_table.update()
            .where(k.keyset_id == have.id)
            .values(state="destroyed", wrapped=None, kek_id=None)
        )
    elif have.state != "shredded":
        if exported["min_decryption_version"] > have.min_decryption_version:
            values["min_decryption_version"] = exported["min_decryption_version"]
        # The later promotion wins; within one second, the higher version (versions only grow).
        newer = (exported["rotated_at"], exported["primary_version"] or 0) > (
            have.rotated_at,
            have.primary_version or 0,
        )
        if newer and exported["primary_version"] not in (None, have.primary_version):
            values.update(primary_version=exported["primary_version"],
                          rotated_at=exported["rotated_at"])  # fmt: skip
            conn.execute(
                key_table.update()
                .where(k.keyset_id == have.id, k.state == "primary")
                .values(state="decrypt_only")
            )
            # The exported primary's own row gets its state when the keys are merged (or
            # inserted) below; mark it here in case it already exists.
            conn.execute(
                key_table.update()
                .where(k.keyset_id == have.id, k.version == exported["primary_version"],
                       k.state == "decrypt_only")
                .values(state="primary")
            )  # fmt: skip
    if values:
        conn.execute(keyset_table.update().where(keyset_table.c.id == have.id).values(**values))
    return 1 if values else 0
