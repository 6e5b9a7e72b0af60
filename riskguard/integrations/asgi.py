"""Request middleware for any ASGI application (Starlette, FastAPI, Quart…).

::

    from riskguard.integrations.asgi import RiskGuardMiddleware, bearer_principal

    app.add_middleware(RiskGuardMiddleware, guard=guard,
                       principal=bearer_principal(verifier))      # FastAPI / Starlette
    app = RiskGuardMiddleware(app, guard=guard)                    # any ASGI app

For each HTTP request the middleware

1. builds the :class:`~riskguard.context.RequestInfo`: the request id from the
   ``X-Request-ID`` header (a plain id of at most 128 characters, else a new uuid4 hex),
   the client IP of the connection — or the first ``X-Forwarded-For`` hop, only with
   ``trust_forwarded=True`` —, and the user agent;
2. asks the ``principal`` callable (sync or async, given the ASGI scope) who is acting;
   :func:`bearer_principal` verifies the ``Authorization: Bearer`` token with a
   :class:`~riskguard.auth.TokenVerifier`. A rejected token
   (:class:`~riskguard.errors.TokenError`) is answered by ``on_error(scope, exc)`` — an
   ASGI app, such as a Starlette ``Response`` — or by default with a 401, the JSON body
   ``{"error": code}`` and ``WWW-Authenticate: Bearer error="invalid_token"`` (the token
   is never echoed); the application is not called;
3. runs the application inside :func:`~riskguard.context.request_context`, the audit log's
   ``batch()`` and the crypto's ``pii_reads()``: every audit event of the request, with
   the one ``pii.read`` event listing which fields of which records were decrypted, is
   appended as one batch when the request ends — also when the application raised;
4. sets the request id on the response (``X-Request-ID``).

``guard=`` takes ``guard.audit`` and ``guard.crypto`` for what ``audit=`` and ``crypto=``
do not give. ``guard.crypto`` is built when the middleware is: if ``[keys]`` cannot be
opened, the constructor raises :class:`~riskguard.errors.ConfigError` (with
``app.add_middleware``, Starlette builds it at startup). An application without field
encryption passes ``audit=guard.audit`` instead.

Decryptions in sync endpoints count too: Starlette runs them in a worker thread with a
copy of the request's context, and the copy shares the request's collector. Threads the
application starts itself need :func:`riskguard.context.propagate`.

WebSocket and lifespan scopes pass through untouched. The batch is written after the
response was sent, in the event loop (one short transaction per request). An error that
Starlette's outermost ``ServerErrorMiddleware`` turns into a 500 leaves the middleware first,
so that response carries no request-id header; its events are appended all the same.

Pure ASGI: no framework is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from riskguard.context import Principal, SubjectType, request_context
from riskguard.errors import TokenError
from riskguard.integrations._request import (
    BearerClaims,
    PiiReader,
    RequestScope,
    authenticate,
    error_response,
    request_info,
)
from riskguard.types import AuditRecorder

if TYPE_CHECKING:
    from riskguard.auth import TokenVerifier
    from riskguard.guard import Guard

__all__ = [
    "ASGIApp",
    "ErrorHandler",
    "Message",
    "PrincipalResolver",
    "Receive",
    "RiskGuardMiddleware",
    "Scope",
    "Send",
    "bearer_principal",
    "token_error_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Who is acting in a request: ``None`` for an anonymous one; raise
#: :class:`~riskguard.errors.TokenError` to refuse it.
PrincipalResolver = Callable[[Scope], Principal | Awaitable[Principal | None] | None]
#: Answers a refused request: returns the ASGI app that sends the response.
ErrorHandler = Callable[[Scope, TokenError], ASGIApp]


def _headers(scope: Scope) -> dict[str, str]:
    # Repeated fields are joined with "," (RFC 9110 §5.3): a repeated Authorization header
    # thereby fails verification instead of one copy being picked.
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _url(scope: Scope, headers: dict[str, str]) -> str:
    """The request URL without query (what a DPoP proof's ``htu`` names)."""
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if not host and scope.get("server"):
        name, port = scope["server"]
        host = f"{name}:{port}" if port is not None else name
    return f"{scheme}://{host or 'localhost'}{scope.get('path', '/')}"


def bearer_principal(
    verifier: TokenVerifier,
    *,
    roles_claim: str = "roles",
    domain_claim: str | None = "tenant",
    scope_claim: str | None = "scope",
    subject_type: SubjectType = "user",
) -> PrincipalResolver:
    """A ``principal`` callable for :class:`RiskGuardMiddleware` that verifies the
    ``Authorization: Bearer`` token (``DPoP`` tokens with their proof too) and maps its
    claims: ``sub`` → subject, ``domain_claim`` → domain, ``roles_claim`` → roles,
    ``scope_claim`` → scopes, ``jti`` → token id. A request without bearer credentials is
    anonymous (``None``).

    The callable raises :class:`~riskguard.auth.TokenRejected` for a token that does not
    verify, or whose claims are not a principal (``missing_claim``, ``bad_claim_type``).
    """
    claims = BearerClaims(
        roles_claim=roles_claim,
        domain_claim=domain_claim,
        scope_claim=scope_claim,
        subject_type=subject_type,
    )

    def resolve(scope: Scope) -> Principal | None:
        headers = _headers(scope)
        return authenticate(
            verifier,
            headers.get("authorization"),
            claims,
            dpop=headers.get("dpop"),
            method=scope.get("method", "GET"),
            url=_url(scope, headers),
        )

    return resolve


def token_error_response(scope: Scope, exc: TokenError) -> ASGIApp:
    """The default ``on_error``: 401 (the error's ``status_code``), ``{"error": code}``
    and the error's ``WWW-Authenticate`` challenge."""
    status, headers, body = error_response(exc)
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw_headers.append((b"content-length", str(len(body)).encode("latin-1")))

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    return respond


class RiskGuardMiddleware:
    """Pure ASGI middleware: request context, per-request audit batch and ``pii.read``
    event, bearer authentication (see the module docstring).

    :param app: the ASGI application to wrap.
    :param guard: supplies ``audit`` and ``crypto`` when they are not given.
    :param audit: the recorder whose events are batched per request (an
        :class:`~riskguard.audit.AuditLog`; a recorder without ``batch()`` is not batched).
    :param crypto: the :class:`~riskguard.crypto.FieldCrypto` whose decryptions make the
        request's ``pii.read`` event (recorded on ``crypto.audit``: pass the same log).
    :param principal: ``principal(scope) -> Principal | None``, sync or async; ``None``:
        every request is anonymous.
    :param on_error: ``on_error(scope, exc) -> ASGIApp`` answers a request whose principal
        raised :class:`~riskguard.errors.TokenError` (default :func:`token_error_response`).
    :param request_id_header: the header the request id is read from and echoed in.
    :param trust_forwarded: take the client IP from ``X-Forwarded-For`` (set it only behind
        a proxy that overwrites that header).
    :raises ConfigError: ``guard`` is given and its field encryption cannot be built, or
        ``crypto`` records its ``pii.read`` events nowhere.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: Guard | None = None,
        audit: AuditRecorder | None = None,
        crypto: PiiReader | None = None,
        principal: PrincipalResolver | None = None,
        on_error: ErrorHandler | None = None,
        request_id_header: str = "x-request-id",
        trust_forwarded: bool = False,
    ) -> None:
        self.app = app
        self.scope = RequestScope(guard=guard, audit=audit, crypto=crypto)
        self.principal = principal
        self.on_error: ErrorHandler = on_error if on_error is not None else token_error_response
        self.request_id_header = request_id_header.lower()
        self.trust_forwarded = trust_forwarded
        self._header_name = self.request_id_header.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = scope.get("client")
        info = request_info(
            request_id=headers.get(self.request_id_header),
            peer=client[0] if client else None,
            forwarded_for=headers.get("x-forwarded-for"),
            user_agent=headers.get("user-agent"),
            trust_forwarded=self.trust_forwarded,
        )
        name, value = self._header_name, info.request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != name]
                message = {**message, "headers": [*kept, (name, value)]}
            await send(message)

        try:
            with request_context(None, info):  # the request id is known while verifying
                principal = await self._resolve(scope)
        except TokenError as exc:
            with self.scope.enter(None, info):
                await self.on_error(scope, exc)(scope, receive, send_with_id)
            return
        with self.scope.enter(principal, info):
            await self.app(scope, receive, send_with_id)

    async def _resolve(self, scope: Scope) -> Principal | None:
        if self.principal is None:
            return None
        result = self.principal(scope)
        if inspect.isawaitable(result):
            result = await result
        return result
