"""An export with any single byte changed never verifies, and verification never crashes;
malformed exports are reported (with the line) rather than raised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskguard.audit import (
    AuditLog,
    KeyHistory,
    MemoryStore,
    SigningKey,
    VerifyReport,
    generate_signing_key,
    verify_export,
)

N_EVENTS = 40
EVERY = 10


@dataclass(frozen=True)
class Export:
    data: bytes
    key: SigningKey
    scratch: Path  # where a fuzzed copy is written (one per module: hypothesis reuses it)

    @property
    def lines(self) -> list[bytes]:
        return self.data.splitlines(keepends=True)


def _make_export(path: Path, n: int) -> SigningKey:
    key = generate_signing_key("test-key")
    log = AuditLog(
        MemoryStore("t/log"),
        keys=KeyHistory(signing=[key]),
        checkpoint_every_events=EVERY,
        checkpoint_every_seconds=0,
        witness_path=None,
    )
    for i in range(n):
        log.record(
            "order.read",
            "allow",
            reason=f"r{i + 1}",
            details={"i": i, "addr": "北京市朝阳区", "amount": 12.5, "note": None},
        )
    if n:
        log.checkpoint()
    log.export(path)
    return key


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """A 40-event export with checkpoints at 10, 20, 30, 40 (the last made explicitly)."""
    path = tmp_path_factory.mktemp("fuzz") / "log.jsonl"
    key = _make_export(path, N_EVENTS)
    return Export(path.read_bytes(), key, path.with_name("fuzzed.jsonl"))


def _verify_bytes(data: bytes, path: Path, key: SigningKey) -> VerifyReport:
    path.write_bytes(data)
    return verify_export(path, [key.trusted()])


def test_unaltered_export_verifies(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(export.data, tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.checked, report.checkpoints) == (True, N_EVENTS, 4)


@settings(max_examples=400, deadline=None)
@given(position=st.integers(0, 2**31), mask=st.integers(1, 255))
def test_any_flipped_byte_fails_verification(export: Export, position: int, mask: int) -> None:
    data = bytearray(export.data)
    pos = position % len(data)
    data[pos] ^= mask
    report = _verify_bytes(bytes(data), export.scratch, export.key)
    assert not report.ok, f"byte {pos} ^ {mask:#04x} still verifies: {report.detail}"


@pytest.mark.parametrize("frontier", [b'"0 "', b'"00"', b'"0:,"', b'" 0:"', b'"+0:"', b'"0_0:"'])
def test_non_canonical_anchor_frontier_is_malformed(
    export: Export, tmp_path: Path, frontier: bytes
) -> None:
    """``"0:"`` read leniently (``int("0 ")``, ``int("00")``) would still verify."""
    lines = export.lines
    assert b'"anchor_frontier":"0:"' in lines[0]
    lines[0] = lines[0].replace(b'"anchor_frontier":"0:"', b'"anchor_frontier":' + frontier)
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind) == (False, "malformed")


# -- targeted malformations --------------------------------------------------------------


def test_corrupt_event_line_is_reported_with_its_line_number(
    export: Export, tmp_path: Path
) -> None:
    lines = export.lines
    n = 1 + 4 + 20  # header, 4 checkpoints, then event 20 on line 25 (1-based)
    lines[n - 1] = b'{"event":{"action": not json\n'
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "modified", 20)
    assert f"line {n}" in report.detail


def test_corrupt_checkpoint_line_is_malformed_with_its_line_number(
    export: Export, tmp_path: Path
) -> None:
    lines = export.lines
    lines[2] = b'{"checkpoint":"t/log\\n20\\n\n'  # line 3: cut short, not JSON
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind) == (False, "malformed")
    assert "line 3" in report.detail


def test_corrupt_header_is_malformed_at_line_1(export: Export, tmp_path: Path) -> None:
    lines = export.lines
    lines[0] = lines[0].replace(b'"version":1', b'"version":2')
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind) == (False, "malformed")
    assert "line 1" in report.detail


def test_non_canonical_header_is_malformed(export: Export, tmp_path: Path) -> None:
    lines = export.lines
    lines[0] = lines[0].replace(b'{"export":{', b'{"export": {')
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind) == (False, "malformed")


def test_unknown_checkpoint_key(export: Export, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(export.data)
    other = generate_signing_key("test-key")  # same name, another key: the key id differs
    report = verify_export(path, [other.trusted()])
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "unknown_key", 10)


def test_checkpoint_of_another_log_is_rejected(export: Export, tmp_path: Path) -> None:
    lines = export.lines
    lines[0] = lines[0].replace(b'"log_id":"t/log"', b'"log_id":"t/other"')
    report = _verify_bytes(b"".join(lines), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "bad_signature", 10)


def test_empty_file_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = verify_export(path, [generate_signing_key("k").trusted()])
    assert (report.ok, report.kind) == (False, "malformed")
    assert "line 1" in report.detail


def test_header_only_is_truncated(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(export.lines[0], tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "truncated", 1)


def test_header_and_checkpoints_only_is_truncated(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(b"".join(export.lines[:5]), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "truncated", 1)


def test_header_without_newline_is_malformed(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(export.lines[0].rstrip(b"\n"), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind) == (False, "malformed")


def test_last_line_without_newline_fails(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(export.data.rstrip(b"\n"), tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.kind, report.first_bad_seq) == (False, "modified", N_EVENTS)


def test_extra_line_after_the_last_event_fails(export: Export, tmp_path: Path) -> None:
    report = _verify_bytes(export.data + b"\n", tmp_path / "x.jsonl", export.key)
    assert (report.ok, report.first_bad_seq) == (False, N_EVENTS + 1)


def test_export_of_an_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "empty-log.jsonl"
    key = _make_export(path, 0)
    report = verify_export(path, [key.trusted()])
    assert (report.ok, report.checked, len(path.read_bytes().splitlines())) == (True, 0, 1)


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        verify_export(tmp_path / "absent.jsonl", None)
