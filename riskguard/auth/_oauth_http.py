"""The OAuth server's HTTP vocabulary: request, response, errors, client authentication.

Framework adapters (:mod:`riskguard.integrations`) turn their request into an
:class:`OAuthRequest` (method, URL, headers, raw body, client IP) and render the
:class:`OAuthResponse` they get back; nothing here imports a web framework.

Every refusal is an :class:`OAuthError` carrying the RFC 6749 §5.2 error code, a
description written for the client's developer, and the HTTP status. Descriptions name the
parameter that is wrong, never a secret, token or stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from riskguard.auth._clients import ClientRegistry, OAuthClient, check_client_secret
from riskguard.auth._errors import _quote

__all__ = [
    "MAX_BODY_BYTES",
    "NO_STORE",
    "OAuthError",
    "OAuthRequest",
    "OAuthResponse",
    "authenticate_client",
    "json_response",
    "parse_form",
]

#: Largest request body the endpoints parse.
MAX_BODY_BYTES = 64 * 1024
#: Headers on every token, introspection and error response (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_PARAM = 4096


@dataclass(frozen=True, slots=True)
class OAuthRequest:
    """An HTTP request as the endpoints see it.

    ``headers`` keys are compared case-insensitively; ``body`` is the raw body (form
    encoded for POST endpoints); ``url`` is the full request URL (its query is read by
    the authorization endpoint).
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    client_ip: str | None = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class OAuthResponse:
    """What an endpoint answers: status, headers and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def json_response(status: int, body: Any, *, headers: Mapping[str, str] | None = None,
                  cache: bool = False) -> OAuthResponse:  # fmt: skip
    """A JSON response; ``no-store`` unless ``cache``."""
    out = {"Content-Type": "application/json"}
    if not cache:
        out.update(NO_STORE)
    out.update(headers or {})
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return OAuthResponse(status, out, data)


class OAuthError(Exception):
    """A request refused with an RFC 6749 §5.2 / RFC 7009 / RFC 7662 error.

    :param error: the error code (``invalid_request``, ``invalid_client``…).
    :param description: for the client's developer; no secrets, no tokens.
    :param status: the HTTP status (400, 401 for ``invalid_client``…).
    """

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> OAuthResponse:
        """The JSON error response."""
        body = {"error": self.error, "error_description": _quote(self.description)}
        return json_response(self.status, body, headers=self.headers)


def invalid_request(description: str) -> OAuthError:
    """An ``invalid_request`` error (400)."""
    return OAuthError("invalid_request", description)


def parse_form(request: OAuthRequest) -> dict[str, str]:
    """The form parameters of a POST endpoint, each at most once (RFC 6749 §3.2).

    :raises OAuthError: ``invalid_request`` for another method, content type, an oversize
        or undecodable body, or a repeated parameter.
    """
    if request.method.upper() != "POST":
        raise OAuthError("invalid_request", "this endpoint accepts POST only", status=405,
                         headers={"Allow": "POST"})  # fmt: skip
    ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise invalid_request("the body must be application/x-www-form-urlencoded")
    if len(request.body) > MAX_BODY_BYTES:
        raise invalid_request(f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        text = request.body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          errors="strict", max_num_fields=64)  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("the body is not a valid UTF-8 form encoding") from None
    return params_once(pairs)


def params_once(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Pairs as a dict, dropping empty values (RFC 6749 §3.1: treated as omitted).

    :raises OAuthError: ``invalid_request`` when a parameter repeats or is too long.
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise invalid_request(f"parameter {name!r} is repeated")
        if len(value) > _MAX_PARAM:
            raise invalid_request(f"parameter {name!r} is too long")
        if value != "":
            out[name] = value
    return out


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise _client_error("the Authorization header is not HTTP Basic", basic=True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _client_error("the Basic credentials are not valid base64", basic=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _client_error("the Basic credentials must be client_id:client_secret", basic=True)
    # RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def _client_error(description: str, *, basic: bool) -> OAuthError:
    headers = {"WWW-Authenticate": 'Basic realm="oauth", charset="UTF-8"'} if basic else {}
    return OAuthError("invalid_client", description, status=401, headers=headers)


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """The outcome of client authentication: the client and how it authenticated."""

    client: OAuthClient
    method: str


def authenticate_client(
    request: OAuthRequest, params: dict[str, str], registry: ClientRegistry
) -> ClientAuth:
    """Authenticate the client of a token, introspection or revocation request.

    Exactly one method may be used (RFC 6749 §2.3); the method must be the one the client
    registered; secrets are checked with scrypt in constant time, and unknown clients cost
    the same. ``client_id`` and ``client_secret`` are removed from ``params``.

    :raises OAuthError: ``invalid_request`` (several methods, no client identified) or
        ``invalid_client`` (401; with ``WWW-Authenticate: Basic`` when Basic was tried).
    """
    header = request.header("authorization")
    body_id = params.pop("client_id", None)
    body_secret = params.pop("client_secret", None)
    if header is not None:
        if body_secret is not None:
            raise invalid_request("use one client authentication method, not Basic and the body")
        client_id, secret = _basic_credentials(header)
        if body_id is not None and body_id != client_id:
            raise invalid_request("client_id in the body differs from the Basic credentials")
        method: str = "client_secret_basic"
    elif body_secret is not None:
        if body_id is None:
            raise invalid_request("client_secret was sent without client_id")
        client_id, secret, method = body_id, body_secret, "client_secret_post"
    elif body_id is not None:
        client_id, secret, method = body_id, "", "none"
    else:
        raise _client_error("no client authentication was included", basic=True)
    basic = method == "client_secret_basic"
    client = registry.get(client_id) if len(client_id) <= 255 else None
    if method == "none":
        if client is None or not client.public:
            raise _client_error("unknown client, or the client must authenticate", basic=False)
        return ClientAuth(client, method)
    ok = check_client_secret(secret, client.secret_hash if client is not None else None)
    if client is None or not ok:
        raise _client_error("client authentication failed", basic=basic)
    if client.token_endpoint_auth_method != method:
        raise _client_error(
            f"this client must authenticate with {client.token_endpoint_auth_method}",
            basic=basic,
        )
    return ClientAuth(client, method)
