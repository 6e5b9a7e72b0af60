"""Offline verification of an export file: no database, no private key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from riskguard.audit._checkpoint import TrustedKey
from riskguard.audit._export import ExportFormatError, ExportReader
from riskguard.audit._verify import ChainVerifier, VerifyReport

__all__ = ["verify_export"]


def verify_export(
    path: Path,
    trusted: Sequence[TrustedKey] | None,
    *,
    external: Sequence[tuple[str, str]] = (),
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify an export written by :meth:`AuditLog.export` against ``trusted`` public keys
    and any ``external`` checkpoints ``(source, note)`` (a witness copy, ``--checkpoint``).

    Damage, including a malformed line, is reported, never raised.

    :raises OSError: the file cannot be opened.
    """
    try:
        reader = ExportReader(path)
    except ExportFormatError as exc:
        return VerifyReport(False, 0, None, "malformed", str(exc))
    h = reader.header
    v = ChainVerifier(
        h.log_id,
        trusted,
        [*reader.notes, *external],
        start_seq=h.after_seq,
        start_hash=h.anchor_hash,
        start_frontier=reader.frontier,
        progress=progress,
    )
    report = reader.verify_into(v)
    if report.ok and reader.rows_read != h.events:
        # The header is not signed, but a count that disagrees means the file was cut or
        # padded; name it even where no checkpoint covers the difference.
        seq = h.after_seq + min(reader.rows_read, h.events) + 1
        kind = "truncated" if reader.rows_read < h.events else "inserted"
        return VerifyReport(
            False, report.checked, seq, kind,
            f"the export header announces {h.events} events but the file holds "
            f"{reader.rows_read}", report.checkpoints,
        )  # fmt: skip
    return report
