"""The tamper-evident audit log.

Every event is hash-chained (``hash = SHA-256(prev_hash || canonical(event))``) and a leaf of
an RFC 6962 Merkle tree; signed checkpoints (C2SP tlog-checkpoint notes, Ed25519) fix the
tree at intervals. Verification names the first damaged ``seq`` and the kind of damage;
inclusion and consistency proofs verify offline against a signed root. See
``tests/vectors/audit_chain.json`` for the canonical form.

::

    from riskguard.audit import AuditLog, SqlStore
    log = AuditLog(SqlStore(engine), keys=KeyHistory(signing=[key]))
    log.record("auth.login", "success", details={"method": "password"})
    log.verify().raise_for_damage()
"""

from __future__ import annotations

from riskguard.audit._canonical import GENESIS_HASH, canonical_json, format_ts, parse_ts
from riskguard.audit._checkpoint import (
    Checkpoint,
    CheckpointError,
    KeyHistory,
    SignedCheckpoint,
    SigningKey,
    TrustedKey,
    generate_signing_key,
    load_signing_key,
    parse_checkpoint,
)
from riskguard.audit._event import (
    AuditEvent,
    DetailsEncoder,
    PendingEvent,
    PlainDetails,
    build_event,
)
from riskguard.audit._export import ExportHeader, ExportReader, write_export
from riskguard.audit._log import AuditLog, read_witness
from riskguard.audit._merkle import (
    ConsistencyProof,
    Frontier,
    InclusionProof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from riskguard.audit._offline import verify_export
from riskguard.audit._sql import SqlStore
from riskguard.audit._store import AuditStore, Head, MemoryStore, SearchFilter
from riskguard.audit._verify import KINDS, VerifyReport

__all__ = [
    # events
    "GENESIS_HASH",
    # proofs and verification
    "KINDS",
    "AuditEvent",
    # the log
    "AuditLog",
    "AuditStore",
    # checkpoints and keys
    "Checkpoint",
    "CheckpointError",
    "ConsistencyProof",
    "DetailsEncoder",
    "ExportHeader",
    "ExportReader",
    "Frontier",
    "Head",
    "InclusionProof",
    "KeyHistory",
    "MemoryStore",
    "PendingEvent",
    "PlainDetails",
    "SearchFilter",
    "SignedCheckpoint",
    "SigningKey",
    "SqlStore",
    "TrustedKey",
    "VerifyReport",
    "build_event",
    "canonical_json",
    "format_ts",
    "generate_signing_key",
    "leaf_hash",
    "load_signing_key",
    "parse_checkpoint",
    "parse_ts",
    "read_witness",
    "root_of",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
    "write_export",
]
