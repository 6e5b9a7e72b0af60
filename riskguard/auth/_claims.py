"""Checks on what goes into an access token: identifiers, scope, roles, extra claims.

A JWT is signed, not encrypted: anyone holding it reads every claim. So claims carry
identifiers, never secrets or personal data (house rule 16). :func:`check_sensitive`
refuses claim names that announce a secret or personal field, and values that look like a
payment card, a PRC resident identity number, a mainland mobile number or an e-mail
address. It is a guard against mistakes, not a classifier: opaque ids pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MAX_EXTRA_CLAIMS_BYTES",
    "RESERVED_CLAIMS",
    "check_extra_claims",
    "check_identifier",
    "check_jkt",
    "check_sensitive",
    "normalise_roles",
    "normalise_scope",
]

#: Claims the service sets itself; extra claims may not name them.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "tenant", "roles",
     "cnf", "typ"}
)  # fmt: skip
#: Cap on the JSON of the extra claims (tokens travel in every request header).
MAX_EXTRA_CLAIMS_BYTES = 2048
_MAX_ID = 255
_MAX_SCOPE = 2048

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 §3.3 scope-token
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url SHA-256 (RFC 7638)
_SENSITIVE_NAMES = frozenset(
    {"password", "passwd", "pwd", "secret", "client_secret", "api_key", "apikey",
     "private_key", "token", "access_token", "refresh_token", "id_token", "otp", "pin",
     "cvv", "card_number", "pan", "phone", "mobile", "email", "id_card", "id_number",
     "address", "bank_account"}
)  # fmt: skip
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PATTERNS = (
    ("a PRC resident identity number", re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")),
    ("a mobile phone number", re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d{9}(?!\d)")),
    ("an e-mail address", re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")),
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_like(value: str) -> str | None:
    for what, pattern in _PATTERNS:  # the specific shapes first: "+86 138…" passes Luhn
        if pattern.search(value):
            return what
    for match in _CARD.finditer(value):
        if _luhn(re.sub(r"[ -]", "", match.group())):
            return "a payment card number"
    return None


def check_sensitive(name: str, value: Any) -> None:
    """Refuse a claim that names or holds a secret or personal data.

    :raises ValueError: naming the claim (never its value) and what it looks like.
    """
    if name.lower().replace("-", "_") in _SENSITIVE_NAMES:
        raise ValueError(
            f"claim {name!r} names a secret or personal field: tokens are readable by "
            "whoever holds them; put an opaque id in the token instead"
        )
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            what = _looks_like(item)
            if what is not None:
                raise ValueError(
                    f"claim {name!r} holds what looks like {what}: tokens are readable by "
                    "whoever holds them; use an opaque id"
                )
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                check_sensitive(f"{name}.{key}", sub)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def check_identifier(name: str, value: object, *, sensitive: bool = False) -> str:
    """``value`` if it is a non-empty string of at most 255 characters.

    :raises ValueError: it is not (or, with ``sensitive``, it looks like personal data).
    """
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise ValueError(f"{name} must be a non-empty string of at most {_MAX_ID} characters")
    if sensitive:
        check_sensitive(name, value)
    return value


def normalise_scope(scope: str | Iterable[str]) -> str:
    """Scope as one space-separated string of unique RFC 6749 scope-tokens, in order.

    :raises ValueError: a scope-token holds a character outside RFC 6749 §3.3.
    """
    items = scope.split(" ") if isinstance(scope, str) else list(scope)
    seen: dict[str, None] = {}
    for item in items:
        if item == "" and isinstance(scope, str):
            continue  # runs of spaces
        if not isinstance(item, str) or not _SCOPE_TOKEN.fullmatch(item):
            raise ValueError("each scope must be a non-empty RFC 6749 scope-token")
        seen[item] = None
    text = " ".join(seen)
    if len(text) > _MAX_SCOPE:
        raise ValueError(f"scope is longer than {_MAX_SCOPE} characters")
    return text


def normalise_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Roles as a tuple of unique non-empty strings, in order.

    :raises ValueError: ``roles`` is a bare string or holds a non-string or empty role.
    """
    if isinstance(roles, str):
        raise ValueError("roles must be a list of role names, not a string")
    out: dict[str, None] = {}
    for role in roles:
        out[check_identifier("each role", role)] = None
    return tuple(out)


def check_jkt(jkt: object) -> str:
    """``jkt`` if it is an RFC 7638 SHA-256 thumbprint (43 base64url characters).

    :raises ValueError: it is not.
    """
    if not isinstance(jkt, str) or not _JKT.fullmatch(jkt):
        raise ValueError("jkt must be the base64url SHA-256 JWK thumbprint (43 characters)")
    return jkt


def check_extra_claims(claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """Extra access-token claims (``auth_time``, ``acr``, ``amr``, private claims), as a
    plain dict, after checking names, values, JSON form and size.

    :raises ValueError: a reserved or sensitive claim, a value that is not strict JSON
        (``NaN``, sets…), or more than :data:`MAX_EXTRA_CLAIMS_BYTES` of JSON.
    """
    if not claims:
        return {}
    out = dict(claims)
    for name, value in out.items():
        if not isinstance(name, str) or not name:
            raise ValueError("claim names must be non-empty strings")
        if name in RESERVED_CLAIMS:
            raise ValueError(f"claim {name!r} is set by the token service, not by callers")
        check_sensitive(name, value)
    try:
        encoded = json.dumps(out, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("extra claims must be JSON values (no NaN, sets or objects)") from None
    if len(encoded.encode("utf-8")) > MAX_EXTRA_CLAIMS_BYTES:
        raise ValueError(f"extra claims exceed {MAX_EXTRA_CLAIMS_BYTES} bytes of JSON")
    parsed: dict[str, Any] = json.loads(encoded)  # tuples become lists, as they will be read
    return parsed
