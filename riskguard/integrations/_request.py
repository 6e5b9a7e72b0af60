"""The framework-neutral core of riskguard's request middleware.

:class:`riskguard.integrations.asgi.RiskGuardMiddleware` and
:func:`riskguard.integrations.flask.init_app` both call it: it builds the request's
:class:`~riskguard.context.RequestInfo`, maps a verified bearer token to a
:class:`~riskguard.context.Principal`, renders a rejected token, and enters the
per-request context managers in the one order that puts the request's ``pii.read`` event
into the request's audit batch. Internal: use the adapters.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from riskguard.context import Principal, RequestInfo, SubjectType, request_context
from riskguard.errors import ConfigError, KeyManagementError, TokenError
from riskguard.types import AuditRecorder

if TYPE_CHECKING:
    from riskguard.auth import TokenVerifier
    from riskguard.guard import Guard

__all__ = [
    "BearerClaims",
    "PiiReader",
    "RequestScope",
    "authenticate",
    "error_response",
    "request_info",
]

_log = logger.bind(component="integrations")

# A request id comes from the client: only short, plain ids are kept (it is echoed in a
# response header and stored in every audit event); anything else gets a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
_MAX_USER_AGENT = 512
_DEFAULT_CHALLENGE = 'Bearer error="invalid_token"'


class PiiReader(Protocol):
    """What the middleware needs of :class:`~riskguard.crypto.FieldCrypto` (or
    :class:`~riskguard.crypto.FieldCipher`): a per-request ``pii_reads()`` block and the
    recorder its ``pii.read`` event goes to."""

    @property
    def audit(self) -> AuditRecorder | None:
        """Where ``pii.read`` is recorded."""
        ...

    def pii_reads(self) -> AbstractContextManager[Any]:
        """Collect the block's decryptions into one ``pii.read`` event."""
        ...


def request_info(
    *,
    request_id: str | None,
    peer: str | None,
    forwarded_for: str | None,
    user_agent: str | None,
    trust_forwarded: bool,
) -> RequestInfo:
    """The :class:`RequestInfo` of one request.

    :param request_id: the request-id header's value; kept when it is a plain id of at most
        128 characters, else replaced by a new one.
    :param peer: the address of the connection's other end.
    :param forwarded_for: the ``X-Forwarded-For`` header; its first hop is the client IP
        only when ``trust_forwarded`` (the application sits behind a proxy that sets it)
        and it is an IP address. Otherwise a client could claim any address.
    :param user_agent: the ``User-Agent`` header (cut to 512 characters).
    """
    rid = request_id.strip() if request_id else ""
    client_ip = peer
    if trust_forwarded and forwarded_for:
        first = forwarded_for.split(",", 1)[0].strip()
        # Not an address (a proxy's "unknown", garbage): the peer stays the client IP.
        with suppress(ValueError):
            client_ip = str(ipaddress.ip_address(first))
    kwargs: dict[str, Any] = {
        "client_ip": client_ip,
        "user_agent": user_agent[:_MAX_USER_AGENT] if user_agent else None,
    }
    if _REQUEST_ID.fullmatch(rid):
        kwargs["request_id"] = rid
    return RequestInfo(**kwargs)


class BearerClaims:
    """How a verified access token's claims become a :class:`Principal`.

    :param roles_claim: a list of role names (or one space-separated string).
    :param domain_claim: the tenant or merchant domain (``None``: never read).
    :param scope_claim: the space-separated scopes (``None``: never read).
    :param subject_type: the :attr:`Principal.type` of every principal.
    """

    __slots__ = ("domain_claim", "roles_claim", "scope_claim", "subject_type")

    def __init__(
        self,
        *,
        roles_claim: str = "roles",
        domain_claim: str | None = "tenant",
        scope_claim: str | None = "scope",
        subject_type: SubjectType = "user",
    ) -> None:
        self.roles_claim = roles_claim
        self.domain_claim = domain_claim
        self.scope_claim = scope_claim
        self.subject_type = subject_type

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The principal the claims name.

        :raises TokenRejected: ``missing_claim`` (no ``sub``) or ``bad_claim_type``.
        """
        from riskguard.auth import TokenRejected

        sub = claims.get("sub")
        if sub is None:
            raise TokenRejected("missing_claim", "the token has no sub claim")
        if not isinstance(sub, str) or not sub:
            raise TokenRejected("bad_claim_type", "the sub claim must be a non-empty string")
        domain = claims.get(self.domain_claim) if self.domain_claim else None
        if domain is not None and not isinstance(domain, str):
            raise TokenRejected("bad_claim_type", f"the {self.domain_claim} claim is no string")
        jti = claims.get("jti")
        return Principal(
            subject=sub,
            type=self.subject_type,
            domain=domain,
            roles=_names(claims.get(self.roles_claim), self.roles_claim),
            scopes=_names(claims.get(self.scope_claim), self.scope_claim)
            if self.scope_claim
            else (),
            token_id=jti if isinstance(jti, str) else None,
        )


def _names(value: Any, claim: str | None) -> tuple[str, ...]:
    from riskguard.auth import TokenRejected

    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenRejected("bad_claim_type", f"the {claim} claim must be a list of strings")


def authenticate(
    verifier: TokenVerifier,
    authorization: str | None,
    claims: BearerClaims,
    *,
    dpop: str | None,
    method: str,
    url: str,
) -> Principal | None:
    """The principal of an ``Authorization: Bearer`` (or ``DPoP``) header, or ``None``
    when the request carries no such credentials.

    :raises TokenRejected: the token (or its DPoP proof) does not verify, or its claims do
        not make a principal.
    :raises StorageError: the deny-list could not be asked.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "dpop"):
        return None  # another scheme (Basic…): not ours to judge
    verified = verifier.verify(token.strip(), dpop=dpop, method=method, url=url)
    return claims.principal(verified)


def error_response(exc: TokenError) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and JSON body (``{"error": code}``) answering a rejected token.
    Neither holds the token: the code is a stable name, the challenge names the check."""
    challenge = getattr(exc, "www_authenticate", None)
    headers = [
        ("content-type", "application/json"),
        ("www-authenticate", challenge() if callable(challenge) else _DEFAULT_CHALLENGE),
        ("cache-control", "no-store"),
    ]
    status = getattr(exc, "status_code", 401)
    return int(status), headers, json.dumps({"error": exc.code}).encode("utf-8")


class RequestScope:
    """The per-request context managers, chosen once.

    For each request, :meth:`enter` sets the principal and the request info
    (:func:`request_context`), opens the audit log's ``batch()`` (when the recorder has
    one) and the crypto's ``pii_reads()`` — innermost, so that its ``pii.read`` event is
    recorded while the batch is open and the principal and request are still set.

    :param guard: takes ``guard.audit`` and ``guard.crypto`` for what is not given.
    :param audit: the recorder whose events are batched per request.
    :param crypto: whose decryptions become the request's ``pii.read`` event.
    :raises ConfigError: ``guard`` is given and its field encryption cannot be built, or
        ``crypto`` has no audit recorder (its ``pii.read`` events would be lost).
    """

    def __init__(
        self,
        *,
        guard: Guard | None = None,
        audit: AuditRecorder | None = None,
        crypto: PiiReader | None = None,
    ) -> None:
        if guard is not None:
            if audit is None:
                audit = guard.audit
            if crypto is None:
                crypto = _guard_crypto(guard)
        if crypto is not None and crypto.audit is None:
            raise ConfigError(
                "the crypto object has no audit recorder: its pii.read events would be lost",
                hint="build FieldCrypto(keyring, audit=audit_log) or Keyring(..., audit=...)",
            )
        if crypto is not None and audit is not None and crypto.audit is not audit:
            _log.warning("pii.read events go to another recorder than the request's batch")
        self.audit = audit
        self.crypto = crypto

    @contextmanager
    def enter(self, principal: Principal | None, info: RequestInfo) -> Iterator[RequestInfo]:
        """Serve one request inside the block (see the class docstring). On exit, also
        with an exception, the ``pii.read`` event is recorded and the batch appended."""
        with ExitStack() as stack:
            stack.enter_context(request_context(principal, info))
            batch = getattr(self.audit, "batch", None)
            if callable(batch):
                stack.enter_context(batch())
            if self.crypto is not None:
                stack.enter_context(self.crypto.pii_reads())
            yield info


def _guard_crypto(guard: Guard) -> PiiReader:
    try:
        return guard.crypto
    except KeyManagementError as exc:
        # The provider failed to open (a missing passphrase variable or keyring file): a
        # setup problem, reported when the middleware is built rather than per request.
        raise ConfigError(
            f"field encryption is not usable: {exc.message}",
            key="keys.provider",
            hint=(exc.hint + "; " if exc.hint else "")
            + "to serve without pii.read auditing, pass audit=guard.audit instead of guard=",
        ) from exc
