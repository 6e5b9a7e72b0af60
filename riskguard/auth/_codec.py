"""Strict base64url and strict JSON for JOSE headers, payloads and JWK members.

Python's :mod:`json` is lenient where a token parser must not be: it keeps the last of
duplicate keys (so two parsers can read two different tokens, RFC 8725 §3.9 and RFC 7515
§5.2), accepts ``NaN``/``Infinity``, turns ``1e400`` into ``inf`` and recurses as deep as
the input asks. :func:`loads_object` closes each of these; :func:`b64url_decode` accepts
only the canonical unpadded form (RFC 7515 §2), so one token has exactly one spelling.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_NUMERIC_DATE",
    "StrictJSONError",
    "b64url_decode",
    "b64url_encode",
    "decode_b64url_segment",
    "is_numeric_date",
    "loads_object",
]

#: Deepest nesting of objects and arrays accepted (the top-level object counts as 1).
MAX_DEPTH = 16

#: The latest NumericDate accepted: 9999-12-31T23:59:59Z.
MAX_NUMERIC_DATE = 253402300799

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# With 2 or 3 characters in the last quantum, the unused low bits of the last character
# must be zero; otherwise several strings decode to the same bytes.
_CANONICAL_TAIL = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_SPECIAL = re.compile(r'[\\"\[\]{}]')


class StrictJSONError(ValueError):
    """Input that is not strict JSON or not canonical base64url. The message names the
    rule that failed and never quotes the input."""


def b64url_decode(segment: str) -> bytes:
    """Decode canonical, unpadded base64url (RFC 7515 §2).

    :raises StrictJSONError: padding, characters outside ``A-Z a-z 0-9 - _``, an
        impossible length, or non-zero unused bits in the last character.
    """
    if not _B64URL.fullmatch(segment):
        raise StrictJSONError("not unpadded base64url")
    return decode_b64url_segment(segment)


def decode_b64url_segment(segment: str) -> bytes:
    """:func:`b64url_decode` for a segment already known to be in the alphabet."""
    rem = len(segment) % 4
    if rem:
        if rem == 1:
            raise StrictJSONError("base64url of impossible length")
        if segment[-1] not in _CANONICAL_TAIL[rem]:
            raise StrictJSONError("non-canonical base64url")
        segment += "==" if rem == 2 else "="
    return base64.urlsafe_b64decode(segment)


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url of ``data``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise StrictJSONError("duplicate member name")
    return obj


def _constant(name: str) -> Any:
    raise StrictJSONError("NaN and Infinity are not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError("number out of range")
    return value


# Stateless, so one shared instance is a constant, not global mutable state.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float, strict=True
)


def _depth(text: str) -> int:
    """Deepest bracket nesting outside string literals, in one linear pass over the
    characters that matter (run only on bracket-heavy input, before the recursive parser).
    """
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for m in _SPECIAL.finditer(text):
        i = m.start()
        if i == escaped_at:
            continue
        ch = m.group()
        if in_string:
            if ch == "\\":
                escaped_at = i + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "]" or ch == "}":
            depth -= 1
    return deepest


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as one strict JSON object (RFC 8259 in UTF-8, I-JSON-like rules).

    :raises StrictJSONError: not UTF-8, not JSON, duplicate member names, ``NaN`` or
        ``Infinity``, a number that does not fit a double, nesting deeper than
        :data:`MAX_DEPTH`, or a top-level value that is not an object.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJSONError("not UTF-8") from None
    # Fewer opening brackets than the limit cannot nest past it: the common case pays two
    # C-speed counts; only bracket-heavy input is scanned, and before the recursive parser.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise StrictJSONError(f"nested deeper than {MAX_DEPTH}")
    try:
        value = _DECODER.decode(text)
    except StrictJSONError:
        raise
    except (ValueError, RecursionError):
        # JSONDecodeError, and int() refusing a literal of more than 4300 digits.
        raise StrictJSONError("not valid JSON") from None
    if type(value) is not dict:
        raise StrictJSONError("not a JSON object")
    return value


def is_numeric_date(value: Any) -> bool:
    """Whether ``value`` is a NumericDate (RFC 7519 §2): a JSON number, not a string or a
    boolean, from 0 to :data:`MAX_NUMERIC_DATE` (``NaN`` and infinities never parse)."""
    kind = type(value)  # bool is a subclass of int: compare types, not isinstance
    return (kind is int or kind is float) and 0 <= value <= MAX_NUMERIC_DATE
