"""Signed checkpoints: note format, signatures, key windows and rotation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from riskguard.audit import (
    AuditLog,
    Checkpoint,
    CheckpointError,
    KeyHistory,
    MemoryStore,
    SigningKey,
    TrustedKey,
    generate_signing_key,
    parse_checkpoint,
)
from riskguard.errors import ConfigError

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _cp(size: int = 10, when: datetime = T0) -> Checkpoint:
    return Checkpoint("example/log", size, bytes(range(32)), "ab" * 32, when)


def test_note_has_the_c2sp_shape() -> None:
    key = generate_signing_key("example.com/audit")
    note = _cp().sign([key]).note
    body, _, sigs = note.partition("\n\n")
    assert body.split("\n") == [
        "example/log",
        "10",
        base64.b64encode(bytes(range(32))).decode(),
        "head " + "ab" * 32,
        "time 2026-06-01T00:00:00.000000Z",
    ]
    assert sigs.startswith("\u2014 example.com/audit ")
    raw = base64.b64decode(sigs.split(" ")[2])
    assert raw[:4] == key.trusted().key_id and len(raw) == 68


def test_round_trip_and_verify() -> None:
    key = generate_signing_key("k1")
    signed = parse_checkpoint(_cp().sign([key]).note)
    assert signed.checkpoint == _cp()
    assert signed.verify([key.trusted()]) == ["k1"]


def test_verifier_key_string_round_trips() -> None:
    key = generate_signing_key("k1").trusted()
    back = TrustedKey.from_verifier_key(key.verifier_key())
    assert back.key_id == key.key_id
    with pytest.raises(ValueError, match="key id"):
        TrustedKey.from_verifier_key(key.verifier_key().replace("k1+", "k2+"))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda n: n.replace("\n10\n", "\n010\n"), "origin or tree size"),
        (lambda n: n.replace("\n\n", "\n"), "signature block"),
        (lambda n: n.replace("head ", "head  "), "extension"),
        (lambda n: n.replace("\u2014 ", "- "), "signature line"),
        (lambda n: n.replace("time 2026", "time 2O26"), "time"),
        (lambda n: n + "\x01", "control"),
    ],
)
def test_malformed_notes_are_rejected(mutate: object, fragment: str) -> None:
    note = _cp().sign([generate_signing_key("k1")]).note
    with pytest.raises(CheckpointError, match=fragment) as err:
        parse_checkpoint(mutate(note))  # type: ignore[operator]
    assert err.value.kind == "malformed"


def test_a_bad_signature_from_a_trusted_key_is_bad_signature() -> None:
    key = generate_signing_key("k1")
    note = _cp().sign([key]).note
    body, _, sig_line = note.partition("\n\n")
    name, b64 = sig_line.strip()[2:].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 1
    forged = f"{body}\n\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointError) as err:
        parse_checkpoint(forged).verify([key.trusted()])
    assert err.value.kind == "bad_signature"


def test_unknown_keys_are_ignored_and_none_trusted_is_unknown_key() -> None:
    signed = _cp().sign([generate_signing_key("k1")])
    with pytest.raises(CheckpointError) as err:
        signed.verify([generate_signing_key("k1").trusted()])  # same name, other key
    assert err.value.kind == "unknown_key"


def test_a_key_outside_its_window_does_not_count() -> None:
    key = generate_signing_key("k1", not_before=T0 + timedelta(days=1))
    signed = _cp(when=T0).sign([key])
    with pytest.raises(CheckpointError, match="not valid at") as err:
        signed.verify([key.trusted()])
    assert err.value.kind == "unknown_key"


def test_rotation_overlap_co_signs_and_verification_never_breaks(tmp_path: Path) -> None:
    """Old key valid until day 10, new key from day 8: checkpoints on every day verify."""
    old = generate_signing_key("audit-2026a", not_after=T0 + timedelta(days=10))
    new = generate_signing_key("audit-2026b", not_before=T0 + timedelta(days=8))
    now = [T0]
    keys = KeyHistory(signing=[old, new])
    log = AuditLog(MemoryStore("example/log"), keys=keys, clock=lambda: now[0],
                   checkpoint_every_events=0, checkpoint_every_seconds=0)  # fmt: skip
    signers = {}
    for day in range(15):
        now[0] = T0 + timedelta(days=day, hours=1)
        log.record("order.read", "allow", details={"day": day})
        signed = log.checkpoint()
        signers[day] = {n for n, _, _ in signed.signatures()}
    assert signers[0] == {"audit-2026a"}
    assert signers[9] == {"audit-2026a", "audit-2026b"}
    assert signers[14] == {"audit-2026b"}
    # A verifier holding only the public history sees every checkpoint valid.
    public = [old.trusted(), new.trusted()]
    report = log.verify(trusted=public)
    assert report.ok and report.checkpoints == 15, report
    # Holding only the new key, checkpoints before its window are unverifiable.
    report = log.verify(trusted=[new.trusted()])
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "unknown_key", 1)


def test_key_history_file(tmp_path: Path) -> None:
    key = generate_signing_key("audit-2026a")
    (tmp_path / "a.pem").write_bytes(key.private_pem())
    other = generate_signing_key("audit-2025").trusted()
    (tmp_path / "keys.toml").write_text(
        f"""
[[key]]
name = "audit-2025"
public_key = "{other.verifier_key()}"
not_after = 2026-01-31T00:00:00Z

[[key]]
name = "audit-2026a"
public_key = "{key.trusted().verifier_key()}"
not_before = 2026-01-01T00:00:00Z
private_key = "a.pem"
""",
        encoding="utf-8",
    )
    hist = KeyHistory.load(tmp_path / "keys.toml")
    assert [k.name for k in hist.signing] == ["audit-2026a"]
    assert {k.name for k in hist.trusted} == {"audit-2025", "audit-2026a"}
    assert hist.signers_at(datetime(2025, 6, 1, tzinfo=UTC)) == []


def test_key_history_errors_name_file_and_entry(tmp_path: Path) -> None:
    f = tmp_path / "keys.toml"
    f.write_text('[[key]]\nname = "x"\npublic_key = "nonsense"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        KeyHistory.load(f)
    assert err.value.key == "key[1]" and str(f) in str(err.value)
    f.write_text("[[key]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed TOML"):
        KeyHistory.load(f)


def test_key_names_must_be_note_safe() -> None:
    with pytest.raises(ValueError, match="without spaces"):
        generate_signing_key("two words")
    with pytest.raises(ValueError):
        SigningKey("a+b", generate_signing_key("x").private_key)
