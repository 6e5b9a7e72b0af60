"""Proof documents: round trips, and malformed input refused with a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from riskguard.audit import AuditLog, ConsistencyProof, InclusionProof, MemoryStore


@pytest.fixture(scope="module")
def proofs() -> tuple[InclusionProof, ConsistencyProof]:
    log = AuditLog(MemoryStore("t/log"))
    log.append([log.event("order.read", "allow") for _ in range(40)])
    return log.prove(17, 40), log.prove_consistency(13, 40)


def test_round_trips(proofs: tuple[InclusionProof, ConsistencyProof]) -> None:
    inc, cons = proofs
    assert InclusionProof.from_json(inc.to_json()) == inc
    assert InclusionProof.from_bytes(inc.to_bytes()) == inc
    assert ConsistencyProof.from_json(cons.to_json()) == cons


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"seq": "17"}, "seq must be a int"),
        ({"seq": True}, "seq must be a int"),
        ({"tree_size": None}, "tree_size must be a int"),
        ({"event_hash": "abcd"}, "32 bytes"),
        ({"event_hash": "zz" * 32}, "non-hexadecimal"),
        ({"path": "AAAA"}, "path must be a list"),
        ({"path": [1]}, "hash must be a str"),
        ({"path": ["AAAA"]}, "32 bytes"),
        ({"path": ["not base64!"]}, "malformed"),
    ],
)
def test_malformed_inclusion_proofs(
    proofs: tuple[InclusionProof, ConsistencyProof], change: dict[str, Any], fragment: str
) -> None:
    doc = {**proofs[0].to_json(), **change}
    with pytest.raises(ValueError, match="malformed inclusion proof") as err:
        InclusionProof.from_json(doc)
    assert fragment in str(err.value)


def test_missing_fields_and_non_objects(proofs: tuple[InclusionProof, ConsistencyProof]) -> None:
    doc = proofs[1].to_json()
    del doc["second"]
    with pytest.raises(ValueError, match=r"malformed consistency proof.*second"):
        ConsistencyProof.from_json(doc)
    with pytest.raises(ValueError, match="JSON object"):
        ConsistencyProof.from_json([])  # type: ignore[arg-type]


def test_binary_form_rejects_truncation(proofs: tuple[InclusionProof, ConsistencyProof]) -> None:
    raw = proofs[0].to_bytes()
    for cut in (10, 48, len(raw) - 1):
        with pytest.raises(ValueError):
            InclusionProof.from_bytes(raw[:cut])
