"""Recording events: validation, context, details encoder seam, batches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from riskguard.audit import AuditLog, KeyHistory, MemoryStore, PlainDetails, generate_signing_key
from riskguard.context import Principal, RequestInfo, request_context
from riskguard.errors import AuditError
from riskguard.types import AuditRecorder, ResourceRef


def _log(**kw: Any) -> AuditLog:
    return AuditLog(MemoryStore("t/log"), **kw)


def test_audit_log_is_an_audit_recorder() -> None:
    assert isinstance(_log(), AuditRecorder)


def test_actor_and_request_come_from_the_context() -> None:
    log = _log()
    p = Principal("u-1", type="user", domain="m-1", roles=("customer",))
    with request_context(p, RequestInfo(request_id="req-1", client_ip="10.0.0.9")):
        ev = log.record("order.read", "allow", resource=ResourceRef("order", "o-1", "m-1"))
    assert ev.actor == {"id": "u-1", "type": "user", "tenant": "m-1",
                        "roles": ["customer"], "ip": "10.0.0.9"}  # fmt: skip
    assert ev.request_id == "req-1"
    assert ev.resource == {"type": "order", "id": "o-1", "tenant": "m-1"}


def test_an_explicit_actor_wins_over_the_context() -> None:
    log = _log()
    with request_context(Principal("u-1")):
        ev = log.record("key.rotate", "success", actor=Principal("svc", type="service"))
    assert ev.actor is not None and ev.actor["id"] == "svc"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"action": "Login"}, "dotted lowercase"),
        ({"action": "auth"}, "dotted lowercase"),
        ({"outcome": "ok"}, "outcome"),
        ({"details": {"when": object()}}, r"details\.when: object"),
        ({"details": {"x": [1, float("nan")]}}, r"details\.x\[1\]"),
        ({"details": {1: "a"}}, "not a string"),
        ({"details": {"blob": "x" * 400}}, "over the cap of 256"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_appended(
    kwargs: dict[str, Any], fragment: str
) -> None:
    log = _log(max_details_bytes=256)
    args: dict[str, Any] = {"action": "order.read", "outcome": "allow", **kwargs}
    with pytest.raises(AuditError, match=fragment):
        log.record(args.pop("action"), args.pop("outcome"), **args)
    assert log.head().seq == 0


def test_a_batch_with_one_bad_event_appends_nothing() -> None:
    log = _log()
    with pytest.raises(AuditError), log.batch():
        log.record("order.read", "allow")
        log.record("order.read", "allow", details={"bad": {1, 2}})
    assert log.head().seq == 0


def test_a_batch_is_flushed_once_even_when_the_block_fails() -> None:
    log = _log()
    with pytest.raises(RuntimeError), log.batch():
        pending = log.record("order.read", "allow")
        assert log.head().seq == 0  # queued, not yet appended
        assert pending.action == "order.read"
        raise RuntimeError("handler failed")
    assert log.head().seq == 1


def test_nested_batches_join_the_outer_one() -> None:
    log = _log()
    with log.batch():
        log.record("a.b", "success")
        with log.batch():
            log.record("a.c", "success")
        assert log.head().seq == 0
    assert [e.action for e in log.tail()] == ["a.b", "a.c"]


def test_batches_are_per_task() -> None:
    log = _log()

    async def request(n: int) -> None:
        with request_context(Principal(f"u-{n}")), log.batch():
            for i in range(3):
                log.record("order.read", "allow", details={"i": i})
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(4)))

    asyncio.run(main())
    events = log.tail(100)
    assert len(events) == 12
    # Each request's three events are consecutive: one batch per request.
    for start in range(0, 12, 3):
        assert len({e.actor["id"] for e in events[start : start + 3] if e.actor}) == 1
    assert log.verify().ok


class _Redacting:
    """A details encoder standing in for crypto's per-subject encryption."""

    def encode(self, details: Mapping[str, Any], subject: str | None) -> Mapping[str, Any]:
        return {k: (f"enc:{subject}:{len(str(v))}" if k == "phone" else v)
                for k, v in details.items()}  # fmt: skip


def test_the_details_encoder_changes_what_is_stored_not_verification() -> None:
    key = generate_signing_key("k")
    plain = _log(keys=KeyHistory(signing=[key]))
    coded = _log(keys=KeyHistory(signing=[key]), encoder=_Redacting())
    for log in (plain, coded):
        log.record("pii.read", "success", details={"phone": "+8613800138000", "n": 1},
                   subject="u-1")  # fmt: skip
        log.checkpoint()
    assert plain.tail()[0].details["phone"] == "+8613800138000"
    assert coded.tail()[0].details["phone"] == "enc:u-1:14"
    assert "+86" not in coded.tail()[0].details_json
    # Verification needs no encoder and passes for both, also for a log opened on the same
    # store with another encoder (or none).
    assert plain.verify().ok and coded.verify().ok
    reopened = AuditLog(coded.store, keys=KeyHistory(signing=[key]), encoder=PlainDetails())
    assert reopened.verify().ok
