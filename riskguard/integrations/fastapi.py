"""FastAPI / Starlette mount for :class:`riskguard.auth.OAuthServer`.

::

    from riskguard.integrations.fastapi import mount_oauth, oauth_request, send

    mount_oauth(app, server)            # /oauth/token, /oauth/introspect, /oauth/revoke,
                                        # /oauth/jwks, /.well-known/oauth-authorization-server

    @app.get("/oauth/authorize")        # the consent page is the application's
    async def authorize(request: Request):
        try:
            pending = server.authorization_request(await oauth_request(request))
        except AuthorizationError as exc:
            return send(exc.response())
        ...

Needs the ``riskguard[fastapi]`` extra.
"""

from __future__ import annotations

import asyncio

try:
    from fastapi import APIRouter, FastAPI, Request
    from fastapi.responses import Response
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "riskguard.integrations.fastapi needs FastAPI: pip install 'riskguard[fastapi]'"
    ) from exc

from riskguard.auth import METADATA_PATH, OAuthRequest, OAuthResponse, OAuthServer

__all__ = ["mount_oauth", "oauth_request", "oauth_router", "send"]


async def oauth_request(request: Request) -> OAuthRequest:
    """The framework-neutral request (reads the body)."""
    return OAuthRequest(
        method=request.method,
        url=str(request.url),
        headers=dict(request.headers),
        body=await request.body(),
        client_ip=request.client.host if request.client else None,
    )


def send(response: OAuthResponse) -> Response:
    """The Starlette response for an :class:`OAuthResponse`."""
    return Response(content=response.body, status_code=response.status, headers=response.headers)


def oauth_router(server: OAuthServer) -> APIRouter:
    """An :class:`APIRouter` with the token, introspection, revocation and JWKS endpoints
    under ``server.prefix``, and the RFC 8414 metadata at its well-known path."""
    router = APIRouter()
    p = server.prefix
    # The server's handlers block (client secrets are checked with scrypt, stores do I/O):
    # they run in a worker thread, which carries the request context along.

    @router.post(f"{p}/token", include_in_schema=False)
    async def token(request: Request) -> Response:
        return send(await asyncio.to_thread(server.token, await oauth_request(request)))

    @router.post(f"{p}/introspect", include_in_schema=False)
    async def introspect(request: Request) -> Response:
        return send(await asyncio.to_thread(server.introspect, await oauth_request(request)))

    @router.post(f"{p}/revoke", include_in_schema=False)
    async def revoke(request: Request) -> Response:
        return send(await asyncio.to_thread(server.revoke, await oauth_request(request)))

    @router.get(f"{p}/jwks", include_in_schema=False)
    async def jwks() -> Response:
        return send(server.jwks())

    @router.get(METADATA_PATH, include_in_schema=False)
    async def metadata() -> Response:
        return send(server.metadata())

    return router


def mount_oauth(app: FastAPI, server: OAuthServer) -> None:
    """Add :func:`oauth_router` to ``app``."""
    app.include_router(oauth_router(server))
