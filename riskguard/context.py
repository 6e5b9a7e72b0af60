"""The request context: who is acting, for which request.

A :class:`Principal` and a :class:`RequestInfo` live in :mod:`contextvars`. The middleware
sets them once per request; audit, access, crypto and fraud read them, so application code
does not pass them around.

Context variables follow asyncio tasks (a task copies the context it was created in) and
:func:`asyncio.to_thread`. A plain :class:`threading.Thread` or a
:class:`concurrent.futures.ThreadPoolExecutor` starts with an *empty* context: wrap the
callable with :func:`propagate` to carry the current principal and request into it.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

__all__ = [
    "Principal",
    "RequestInfo",
    "SubjectType",
    "current_principal",
    "current_request",
    "propagate",
    "request_context",
]

SubjectType = Literal["user", "service", "staff"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated identity behind a request.

    ``domain`` is the tenant or merchant domain the identity acts in (``None`` for
    platform-wide identities); ``token_id`` is the ``jti`` of the token that proved it.
    """

    subject: str
    type: SubjectType = "user"
    domain: str | None = None
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    token_id: str | None = None

    def __post_init__(self) -> None:
        if not self.subject:
            raise ValueError("Principal.subject must be a non-empty id")
        if self.type not in ("user", "service", "staff"):
            raise ValueError(f"Principal.type must be user, service or staff, not {self.type!r}")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Facts about the request being served (no personal data beyond the client IP)."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    client_ip: str | None = None
    device_id: str | None = None
    user_agent: str | None = None


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "riskguard_principal", default=None
)
_request: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "riskguard_request", default=None
)


def current_principal() -> Principal | None:
    """The principal acting in this context, or ``None`` outside a request."""
    return _principal.get()


def current_request() -> RequestInfo | None:
    """The request being served in this context, or ``None`` outside a request."""
    return _request.get()


@contextmanager
def request_context(
    principal: Principal | None = None, request: RequestInfo | None = None
) -> Iterator[RequestInfo]:
    """Set the principal and request for the block, restoring the previous ones after.

    A missing ``request`` gets a fresh :class:`RequestInfo` with a new request id, so that
    every event recorded inside the block shares one id.
    """
    info = request if request is not None else RequestInfo()
    p_token = _principal.set(principal)
    r_token = _request.set(info)
    try:
        yield info
    finally:
        _request.reset(r_token)
        _principal.reset(p_token)


def propagate(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to a copy of the current context, for running it on another thread."""
    ctx = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run
