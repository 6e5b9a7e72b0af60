"""Flask mount for :class:`riskguard.auth.OAuthServer`.

::

    from riskguard.integrations.flask import oauth_blueprint, oauth_request, send

    app.register_blueprint(oauth_blueprint(server))

    @app.get("/oauth/authorize")        # the consent page is the application's
    def authorize():
        try:
            pending = server.authorization_request(oauth_request())
        except AuthorizationError as exc:
            return send(exc.response())
        ...

Request middleware — the Flask twin of
:class:`riskguard.integrations.asgi.RiskGuardMiddleware`, on the same core::

    from riskguard.integrations.flask import bearer_principal, init_app

    init_app(app, guard=guard, principal=bearer_principal(verifier))

For each request, a ``before_request`` hook (run before the application's own) builds the
:class:`~riskguard.context.RequestInfo` (request id from ``X-Request-ID`` or a new one;
client IP from ``request.remote_addr`` — or the first ``X-Forwarded-For`` hop, only with
``trust_forwarded=True`` —; user agent), asks ``principal(request)`` who is acting and
enters :func:`~riskguard.context.request_context`, the audit log's ``batch()`` and the
crypto's ``pii_reads()`` on a :class:`contextlib.ExitStack` kept on :data:`flask.g`; a
``teardown_request`` hook closes it, so every audit event of the request, with the one
``pii.read`` event, is appended as one batch — also when the view raised. An
``after_request`` hook echoes the request id. A rejected token
(:class:`~riskguard.errors.TokenError`) is answered by ``on_error(exc)`` or with a 401,
``{"error": code}`` and ``WWW-Authenticate: Bearer error="invalid_token"``; the view is
not called. ``guard=`` supplies ``guard.audit`` and ``guard.crypto``; field encryption
that cannot be built raises :class:`~riskguard.errors.ConfigError` from ``init_app``.
Values decrypted while a streamed response is generated (after teardown) are not counted.

Needs the ``riskguard[flask]`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

try:
    from flask import Blueprint, Flask, Request, Response, g, request
    from flask.typing import ResponseReturnValue
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "riskguard.integrations.flask needs Flask: pip install 'riskguard[flask]'"
    ) from exc

from riskguard.auth import METADATA_PATH, OAuthRequest, OAuthResponse, OAuthServer
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
    "bearer_principal",
    "init_app",
    "oauth_blueprint",
    "oauth_request",
    "send",
    "token_error_response",
]

#: Who is acting in the current request: ``None`` for an anonymous one; raise
#: :class:`~riskguard.errors.TokenError` to refuse it.
PrincipalResolver = Callable[[Request], Principal | None]

_STACK = "_riskguard_request_stack"


def oauth_request() -> OAuthRequest:
    """The framework-neutral form of the current Flask request."""
    return OAuthRequest(
        method=request.method,
        url=request.url,
        headers=dict(request.headers),
        body=request.get_data(cache=True),
        client_ip=request.remote_addr,
    )


def send(response: OAuthResponse) -> Response:
    """The Flask response for an :class:`OAuthResponse`."""
    return Response(response.body, status=response.status, headers=response.headers)


def oauth_blueprint(server: OAuthServer, *, name: str = "riskguard_oauth") -> Blueprint:
    """A blueprint with the token, introspection, revocation and JWKS endpoints under
    ``server.prefix``, and the RFC 8414 metadata at its well-known path."""
    bp = Blueprint(name, __name__)
    p = server.prefix
    bp.add_url_rule(f"{p}/token", "token", lambda: send(server.token(oauth_request())),
                    methods=["POST"])  # fmt: skip
    bp.add_url_rule(f"{p}/introspect", "introspect",
                    lambda: send(server.introspect(oauth_request())), methods=["POST"])  # fmt: skip
    bp.add_url_rule(f"{p}/revoke", "revoke", lambda: send(server.revoke(oauth_request())),
                    methods=["POST"])  # fmt: skip
    bp.add_url_rule(f"{p}/jwks", "jwks", lambda: send(server.jwks()), methods=["GET"])
    bp.add_url_rule(METADATA_PATH, "metadata", lambda: send(server.metadata()), methods=["GET"])
    return bp


def bearer_principal(
    verifier: TokenVerifier,
    *,
    roles_claim: str = "roles",
    domain_claim: str | None = "tenant",
    scope_claim: str | None = "scope",
    subject_type: SubjectType = "user",
) -> PrincipalResolver:
    """A ``principal`` callable for :func:`init_app` that verifies the
    ``Authorization: Bearer`` token (``DPoP`` tokens with their proof too) and maps its
    claims as :func:`riskguard.integrations.asgi.bearer_principal` does. A request without
    bearer credentials is anonymous (``None``).

    The callable raises :class:`~riskguard.auth.TokenRejected` for a token that does not
    verify, or whose claims are not a principal.
    """
    claims = BearerClaims(
        roles_claim=roles_claim,
        domain_claim=domain_claim,
        scope_claim=scope_claim,
        subject_type=subject_type,
    )

    def resolve(req: Request) -> Principal | None:
        return authenticate(
            verifier,
            req.headers.get("Authorization"),
            claims,
            dpop=req.headers.get("DPoP"),
            method=req.method,
            url=req.base_url,
        )

    return resolve


def token_error_response(exc: TokenError) -> Response:
    """The default ``on_error``: 401 (the error's ``status_code``), ``{"error": code}`` and
    the error's ``WWW-Authenticate`` challenge."""
    status, headers, body = error_response(exc)
    return Response(body, status=status, headers=headers)


def init_app(
    app: Flask,
    *,
    guard: Guard | None = None,
    audit: AuditRecorder | None = None,
    crypto: PiiReader | None = None,
    principal: PrincipalResolver | None = None,
    on_error: Callable[[TokenError], ResponseReturnValue] | None = None,
    request_id_header: str = "X-Request-ID",
    trust_forwarded: bool = False,
) -> None:
    """Install riskguard's request hooks on ``app`` (see the module docstring).

    :param guard: supplies ``audit`` and ``crypto`` when they are not given.
    :param audit: the recorder whose events are batched per request.
    :param crypto: the :class:`~riskguard.crypto.FieldCrypto` whose decryptions make the
        request's ``pii.read`` event (recorded on ``crypto.audit``: pass the same log).
    :param principal: ``principal(request) -> Principal | None``; ``None``: every request
        is anonymous.
    :param on_error: ``on_error(exc)`` returns the response to a request whose principal
        raised :class:`~riskguard.errors.TokenError` (default :func:`token_error_response`).
    :param request_id_header: the header the request id is read from and echoed in.
    :param trust_forwarded: take the client IP from ``X-Forwarded-For``.
    :raises ConfigError: ``guard`` is given and its field encryption cannot be built, or
        ``crypto`` records its ``pii.read`` events nowhere.
    """
    core = RequestScope(guard=guard, audit=audit, crypto=crypto)
    answer = on_error if on_error is not None else token_error_response

    def open_request() -> ResponseReturnValue | None:
        info = request_info(
            request_id=request.headers.get(request_id_header),
            peer=request.remote_addr,
            forwarded_for=request.headers.get("X-Forwarded-For"),
            user_agent=request.headers.get("User-Agent"),
            trust_forwarded=trust_forwarded,
        )
        who: Principal | None = None
        refused: TokenError | None = None
        if principal is not None:
            try:
                with request_context(None, info):
                    who = principal(request)
            except TokenError as exc:
                refused = exc
        stack = ExitStack()
        stack.enter_context(core.enter(who, info))
        setattr(g, _STACK, (stack, info.request_id))
        return answer(refused) if refused is not None else None

    def echo_request_id(response: Response) -> Response:
        opened = getattr(g, _STACK, None)
        if opened is not None:
            response.headers[request_id_header] = opened[1]
        return response

    def close_request(exc: BaseException | None) -> None:
        opened = g.pop(_STACK, None)
        if opened is not None:
            opened[0].close()  # records pii.read, appends the batch, resets the context

    # First among the before_request hooks: the application's own (access checks, say)
    # then run inside the request's context and batch.
    app.before_request_funcs.setdefault(None, []).insert(0, open_request)
    app.after_request(echo_request_id)
    app.teardown_request(close_request)
