"""``tests/vectors/audit_chain.json``: the canonical form, chain hashes, Merkle roots and a
signed checkpoint, checked against riskguard *and* against an independent computation with
nothing but the standard library (and ``cryptography`` for Ed25519), so that the file
documents the format a second implementation must reproduce."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from riskguard.audit import (
    Checkpoint,
    SigningKey,
    TrustedKey,
    parse_checkpoint,
    parse_ts,
    root_of,
)
from riskguard.audit._canonical import GENESIS_HASH, canonical_json, chain_hash, event_canonical
from riskguard.audit._event import AuditEvent, PendingEvent

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "audit_chain.json").read_text(encoding="utf-8")
)
EVENTS: list[dict[str, Any]] = VECTORS["events"]
CP: dict[str, Any] = VECTORS["checkpoint"]
_FIELDS = ("id", "ts", "action", "outcome", "actor", "resource", "reason", "request_id")


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return [f"seq{e['seq']}-{e['action']}" for e in events]


# -- independent reference implementation ------------------------------------------------


def _ref_canonical(v: dict[str, Any]) -> str:
    obj = {k: v[k] for k in (*_FIELDS, "seq", "details", "prev_hash")}
    obj["v"] = 1
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _ref_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode("utf-8")).hexdigest()


def _ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash, recursively."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _ref_mth(leaves[:k]) + _ref_mth(leaves[k:])).digest()


def _vector_key() -> SigningKey:
    seed = bytes.fromhex(CP["private_seed_hex"])
    return SigningKey(CP["key_name"], Ed25519PrivateKey.from_private_bytes(seed))


# -- the file itself ---------------------------------------------------------------------


def test_vector_chain_starts_at_genesis_and_links() -> None:
    prevs = [e["prev_hash"] for e in EVENTS]
    assert prevs == [GENESIS_HASH] + [e["hash"] for e in EVENTS[:-1]]


def test_vectors_cover_the_awkward_cases() -> None:
    text = "".join(e["canonical"] for e in EVENTS)
    for needle in ("北京市朝阳区", "\\u001f", "\\n", '\\"', "\\\\", "\x7f", "\u2028", "😀",
                   "12.5", "1e-07", "9007199254740993", ":null", ":{}", ":[]"):  # fmt: skip
        assert needle in text, needle


def test_vector_seq_is_its_position() -> None:
    assert [e["seq"] for e in EVENTS] == list(range(1, len(EVENTS) + 1))


# -- canonical text and chain hash -------------------------------------------------------


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_event_canonical_matches_vector(v: dict[str, Any]) -> None:
    text = event_canonical(
        **{k: v[k] for k in _FIELDS},
        seq=v["seq"],
        details_json=canonical_json(v["details"]),
        prev_hash=v["prev_hash"],
    )
    assert text == v["canonical"]


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_chain_hash_matches_vector(v: dict[str, Any]) -> None:
    assert chain_hash(v["prev_hash"], v["canonical"]) == v["hash"]


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_sealed_event_matches_vector(v: dict[str, Any]) -> None:
    pending = PendingEvent(**{k: v[k] for k in _FIELDS}, details_json=canonical_json(v["details"]))
    ev = AuditEvent.seal(pending, v["seq"], v["prev_hash"])
    assert (ev.canonical(), ev.hash, ev.details) == (v["canonical"], v["hash"], v["details"])


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_independent_canonical_agrees(v: dict[str, Any]) -> None:
    assert _ref_canonical(v) == v["canonical"]


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_independent_hash_agrees(v: dict[str, Any]) -> None:
    assert _ref_hash(v["prev_hash"], _ref_canonical(v)) == v["hash"]


@pytest.mark.parametrize("v", EVENTS, ids=_ids(EVENTS))
def test_vector_timestamp_is_canonical(v: dict[str, Any]) -> None:
    ts = parse_ts(v["ts"])
    assert ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == v["ts"] and ts.tzinfo is UTC


def test_export_line_is_canonical_event_and_hash() -> None:
    v = EVENTS[1]
    pending = PendingEvent(**{k: v[k] for k in _FIELDS}, details_json=canonical_json(v["details"]))
    line = AuditEvent.seal(pending, v["seq"], v["prev_hash"]).export_line()
    assert line == canonical_json({"event": json.loads(v["canonical"]), "hash": v["hash"]})


# -- Merkle roots ------------------------------------------------------------------------


@pytest.mark.parametrize("r", VECTORS["merkle"]["roots"], ids=lambda r: f"size{r['size']}")
def test_merkle_root_matches_vector(r: dict[str, Any]) -> None:
    leaves = [bytes.fromhex(e["hash"]) for e in EVENTS[: r["size"]]]
    assert root_of(leaves).hex() == r["root"]


@pytest.mark.parametrize("r", VECTORS["merkle"]["roots"], ids=lambda r: f"size{r['size']}")
def test_independent_merkle_root_agrees(r: dict[str, Any]) -> None:
    leaves = [bytes.fromhex(e["hash"]) for e in EVENTS[: r["size"]]]
    assert _ref_mth(leaves).hex() == r["root"]


def test_merkle_vectors_cover_sizes_0_to_4() -> None:
    assert [r["size"] for r in VECTORS["merkle"]["roots"]] == [0, 1, 2, 3, 4]


# -- signed checkpoint -------------------------------------------------------------------


def _vector_checkpoint() -> Checkpoint:
    return Checkpoint(
        CP["origin"],
        CP["tree_size"],
        base64.b64decode(CP["root_base64"]),
        CP["head_hash"],
        parse_ts(CP["time"]),
    )


def test_checkpoint_commits_to_the_vector_log() -> None:
    root4 = next(r["root"] for r in VECTORS["merkle"]["roots"] if r["size"] == 4)
    cp = _vector_checkpoint()
    assert (cp.root.hex(), cp.head_hash, cp.tree_size) == (root4, EVENTS[3]["hash"], 4)


def test_checkpoint_body_matches_vector() -> None:
    assert _vector_checkpoint().body() == CP["body"]


def test_checkpoint_signing_is_deterministic() -> None:
    assert _vector_checkpoint().sign([_vector_key()]).note == CP["note"]


def test_checkpoint_note_verifies_under_the_vector_key() -> None:
    trusted = TrustedKey.from_verifier_key(CP["verifier_key"])
    assert parse_checkpoint(CP["note"]).verify([trusted]) == [CP["key_name"]]


def test_checkpoint_note_parses_to_the_vector_checkpoint() -> None:
    assert parse_checkpoint(CP["note"]).checkpoint == _vector_checkpoint()


def test_vector_key_matches_its_seed() -> None:
    key = _vector_key().trusted()
    assert (key.public_key.public_bytes_raw().hex(), key.key_id.hex(), key.verifier_key()) == (
        CP["public_key_hex"],
        CP["key_id_hex"],
        CP["verifier_key"],
    )


def test_independent_checkpoint_body_agrees() -> None:
    body = (
        f"{CP['origin']}\n{CP['tree_size']}\n{CP['root_base64']}\n"
        f"head {CP['head_hash']}\ntime {CP['time']}\n"
    )
    assert CP["note"].startswith(body + "\n") and body == CP["body"]


def test_independent_signature_verifies() -> None:
    """Key id and Ed25519 signature checked with ``cryptography`` alone."""
    pub = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    raw_pub = pub.public_bytes_raw()
    key_id = hashlib.sha256(CP["key_name"].encode() + b"\n\x01" + raw_pub).digest()[:4]
    sig_line = CP["note"].split("\n\n", 1)[1]
    prefix = f"\u2014 {CP['key_name']} "
    assert sig_line.startswith(prefix) and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line[len(prefix) : -1], validate=True)
    assert blob[:4] == key_id
    pub.verify(blob[4:], CP["body"].encode())  # raises InvalidSignature on mismatch
