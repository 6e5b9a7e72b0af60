"""JWS compact serialisation (RFC 7515 §7.1), parsed strictly and only after a size cap."""

from __future__ import annotations

import re
from typing import Any

from riskguard.auth._codec import StrictJSONError, decode_b64url_segment, loads_object
from riskguard.auth._errors import TokenRejected

__all__ = ["decode_segment", "parse_compact"]

# Exactly three parts in the base64url alphabet; header and payload non-empty. No padding,
# no whitespace, no fourth or fifth part (JWE): anything else is not a JWS we issue.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")


def parse_compact(token: object, max_bytes: int) -> tuple[str, str, bytes, str, bytes]:
    """Split a compact JWS: ``(token, header_segment, signing_input, payload_segment,
    signature)``. Header and payload stay encoded (see :func:`decode_segment`): callers
    may cache what a header segment means, and parse the payload only once the signature
    holds.

    :raises TokenRejected: ``too_large`` (checked first, before any decoding),
        ``malformed`` (not three base64url parts, or a non-canonical signature).
    """
    if isinstance(token, bytes):
        if len(token) > max_bytes:
            raise TokenRejected("too_large", f"the token is longer than {max_bytes} bytes")
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenRejected("malformed", "the token is not ASCII") from None
    elif isinstance(token, str):
        # len() counts characters; a non-ASCII character (more bytes than one) fails the
        # pattern below, so for every token that gets further, characters == bytes.
        if len(token) > max_bytes:
            raise TokenRejected("too_large", f"the token is longer than {max_bytes} bytes")
    else:
        raise TokenRejected("malformed", "the token is not a string")
    m = _COMPACT.fullmatch(token)
    if m is None:
        raise TokenRejected(
            "malformed",
            "the token is not three unpadded base64url parts separated by dots",
        )
    header_seg, payload_seg, sig_seg = m.groups()
    try:
        signature = decode_b64url_segment(sig_seg)
    except StrictJSONError:
        raise TokenRejected("malformed", "the signature is not canonical base64url") from None
    return token, header_seg, token[: m.end(2)].encode("ascii"), payload_seg, signature


def decode_segment(segment: str, what: str) -> dict[str, Any]:
    """Decode a header or payload segment (alphabet already checked) to a JSON object.

    :raises TokenRejected: ``malformed`` for non-canonical base64url, ``bad_json`` for
        anything :func:`riskguard.auth._codec.loads_object` refuses.
    """
    try:
        raw = decode_b64url_segment(segment)
    except StrictJSONError:
        raise TokenRejected("malformed", f"the {what} is not canonical base64url") from None
    try:
        return loads_object(raw)
    except StrictJSONError as exc:
        raise TokenRejected("bad_json", f"the {what} is not strict JSON: {exc}") from None
