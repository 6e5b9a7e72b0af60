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

Needs the ``riskguard[flask]`` extra.
"""

from __future__ import annotations

try:
    from flask import Blueprint, Response, request
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "riskguard.integrations.flask needs Flask: pip install 'riskguard[flask]'"
    ) from exc

from riskguard.auth import METADATA_PATH, OAuthRequest, OAuthResponse, OAuthServer

__all__ = ["oauth_blueprint", "oauth_request", "send"]


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
