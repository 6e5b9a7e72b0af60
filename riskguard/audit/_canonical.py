"""The canonical serialisation of an audit event and its chain hash.

An event is hashed as ``SHA-256(prev_hash || canonical(event without hash))`` where
``prev_hash`` is the raw 32-byte hash of the previous event (32 zero bytes before the first)
and ``canonical`` is JSON with:

- keys sorted by code point, at every depth;
- no insignificant whitespace (separators ``,`` and ``:``);
- UTF-8, with non-ASCII characters written as themselves (not ``\\u`` escapes); the escapes
  are the ones Python's :func:`json.dumps` writes (``\\"``, ``\\\\``, ``\\n``, ``\\u001f``…);
- integers as decimal, floats as the shortest repr that round-trips, NaN and infinities
  refused;
- timestamps as RFC 3339 UTC strings with exactly six fractional digits and ``Z``
  (``2026-11-29T18:52:41.123456Z``).

Every event has the same top-level keys (absent values are ``null``)::

    action actor details id outcome prev_hash reason request_id resource seq ts v

``tests/vectors/audit_chain.json`` holds worked examples a second implementation can check
itself against.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EVENT_VERSION",
    "GENESIS_HASH",
    "canonical_json",
    "canonical_parts",
    "chain_hash",
    "check_json_value",
    "event_canonical",
    "format_ts",
    "parse_ts",
]

EVENT_VERSION = 1
GENESIS_HASH = "0" * 64

_encode_str = json.encoder.encode_basestring  # what the encoder below uses for str
_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON text.

    :raises TypeError: a value is not JSON-serialisable.
    :raises ValueError: a float is NaN or infinite.
    """
    return _dumps(value)


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-29T18:52:41.123456Z``.

    :raises ValueError: ``ts`` is naive (it must carry a timezone).
    """
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    """The inverse of :func:`format_ts` (strict: exactly that form).

    :raises ValueError: ``text`` is not in the canonical form.
    """
    if len(text) != 27 or not text.endswith("Z"):
        raise ValueError(f"not a canonical RFC 3339 UTC timestamp: {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def event_canonical(
    *,
    id: str,
    seq: int,
    ts: str,
    action: str,
    outcome: str,
    actor: dict[str, Any] | None,
    resource: dict[str, Any] | None,
    reason: str | None,
    request_id: str | None,
    details_json: str,
    prev_hash: str,
) -> str:
    """The canonical text of an event without its hash.

    ``details_json`` is the details object already in canonical form (as stored), spliced in
    verbatim so that a stored row can be re-hashed without re-encoding its details.
    """
    prefix, middle, suffix = canonical_parts(
        id=id, ts=ts, action=action, outcome=outcome, actor=actor, resource=resource,
        reason=reason, request_id=request_id, details_json=details_json,
    )  # fmt: skip
    return prefix + _str(prev_hash) + middle + str(int(seq)) + suffix


def canonical_parts(
    *,
    id: str,
    ts: str,
    action: str,
    outcome: str,
    actor: dict[str, Any] | None,
    resource: dict[str, Any] | None,
    reason: str | None,
    request_id: str | None,
    details_json: str,
) -> tuple[str, str, str]:
    """The canonical text around the two members only the log can fill in: it is
    ``prefix + json(prev_hash) + middle + str(seq) + suffix``.

    Recording builds these once, outside the log's lock, so that sealing an event under
    the lock is string concatenation and one hash.
    """
    # Written by hand in sorted-key order: the generic encoder costs ~8 us an event, this
    # ~2 us. Strings go through the encoder's own string function, so the bytes are the
    # same; members of an unexpected shape fall back to the generic encoder.
    prefix = (
        '{"action":' + _str(action)
        + ',"actor":' + _actor(actor)
        + ',"details":' + details_json
        + ',"id":' + _str(id)
        + ',"outcome":' + _str(outcome)
        + ',"prev_hash":'
    )  # fmt: skip
    middle = (
        ',"reason":' + _str(reason)
        + ',"request_id":' + _str(request_id)
        + ',"resource":' + _resource(resource)
        + ',"seq":'
    )  # fmt: skip
    return prefix, middle, ',"ts":' + _str(ts) + ',"v":' + str(EVENT_VERSION) + "}"


_ACTOR_KEYS = frozenset(("id", "ip", "roles", "tenant", "type"))
_RESOURCE_KEYS = frozenset(("id", "tenant", "type"))


def _str(v: Any) -> str:
    if v is None:
        return "null"
    if type(v) is str:
        return _encode_str(v)
    return _dumps(v)


def _actor(a: dict[str, Any] | None) -> str:
    if a is None:
        return "null"
    roles = a.get("roles")
    if a.keys() != _ACTOR_KEYS or type(roles) is not list:
        return _dumps(a)
    return (
        '{"id":' + _str(a["id"]) + ',"ip":' + _str(a["ip"])
        + ',"roles":[' + ",".join([_str(r) for r in roles])
        + '],"tenant":' + _str(a["tenant"]) + ',"type":' + _str(a["type"]) + "}"
    )  # fmt: skip


def _resource(r: dict[str, Any] | None) -> str:
    if r is None:
        return "null"
    if r.keys() != _RESOURCE_KEYS:
        return _dumps(r)
    return (
        '{"id":' + _str(r["id"]) + ',"tenant":' + _str(r["tenant"])
        + ',"type":' + _str(r["type"]) + "}"
    )  # fmt: skip


def chain_hash(prev_hash: str, canonical: str) -> str:
    """``SHA-256(prev_hash bytes || canonical UTF-8)`` as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode("utf-8")).hexdigest()


def check_json_value(value: Any, path: str = "details", depth: int = 0) -> None:
    """Refuse what canonical JSON cannot carry, naming where it is.

    :raises TypeError: a value that is not ``None``, bool, int, finite float, str, list or
        a dict with str keys.
    :raises ValueError: a NaN/infinite float, or nesting deeper than 16.
    """
    if depth > 16:
        raise ValueError(f"{path}: nested deeper than 16 levels")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value!r} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: key {k!r} is not a string")
            check_json_value(v, f"{path}.{k}", depth + 1)
        return
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-serialisable")
