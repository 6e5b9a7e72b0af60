"""The authorization endpoint, as a helper: the consent page is the application's.

::

    try:
        pending = server.authorization_request(request)     # validate the query
    except AuthorizationError as exc:
        return exc.response()            # a redirect with error=…, or a 400 page
    # … the application authenticates the user and shows pending.client_name,
    # pending.scopes, pending.tenant on its consent page …
    return server.approve(pending, subject=user.id)         # 302 to redirect_uri?code=…

Errors are sent back to the client (a redirect with ``error=`` and ``state``) only once
the client and the redirect URI are known to be valid (RFC 6749 §4.1.2.1); before that a
redirect would turn the server into an open redirector, so the user gets a 400 page.
PKCE is required of every client, with ``S256`` only (RFC 9700 §2.1.1, RFC 7636 §7.2).
Responses carry ``iss`` (RFC 9207) against mix-up attacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from riskguard.auth._clients import ClientRegistry, OAuthClient
from riskguard.auth._oauth_http import OAuthError, OAuthRequest, OAuthResponse, params_once

__all__ = ["AuthorizationError", "AuthorizationRequest", "parse_authorization_request"]

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url SHA-256, unpadded
_MAX_STATE = 1024


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A validated authorization request: what the consent page shows and
    :meth:`~riskguard.auth.OAuthServer.approve` needs.

    ``scopes`` are the requested scope-tokens (the client's registered scope when the
    request named none); ``redirect_uri`` is the URI the response goes to, and
    ``redirect_uri_given`` whether the request named it (the token request must then
    repeat it).
    """

    client_id: str
    client_name: str | None
    tenant: str | None
    redirect_uri: str
    redirect_uri_given: bool
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str

    @property
    def scope(self) -> str:
        """The requested scope as one space-separated string."""
        return " ".join(self.scopes)


def redirect(uri: str, params: dict[str, str]) -> OAuthResponse:
    """A 302 to ``uri`` with ``params`` added to its query."""
    sep = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    location = f"{uri}{sep}{urlencode(params)}"
    return OAuthResponse(302, {"Location": location, "Cache-Control": "no-store"})


class AuthorizationError(Exception):
    """An authorization request refused.

    ``redirect_uri`` is set when the error may go back to the client; :meth:`response`
    renders the redirect (``error``, ``error_description``, ``state``, ``iss``) or, when
    the client or redirect URI is not trusted, a 400 page for the user.
    """

    def __init__(
        self,
        error: str,
        description: str,
        *,
        redirect_uri: str | None = None,
        state: str | None = None,
        issuer: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
        self.issuer = issuer

    def response(self) -> OAuthResponse:
        """The redirect to the client, or a plain-text 400 page."""
        if self.redirect_uri is None:
            text = f"Authorization request refused ({self.error}): {self.description}\n"
            headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
            return OAuthResponse(400, headers, text.encode("utf-8"))
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        if self.issuer is not None:
            params["iss"] = self.issuer
        return redirect(self.redirect_uri, params)


def _page(description: str) -> AuthorizationError:
    return AuthorizationError("invalid_request", description)


def _client_and_redirect(
    params: list[tuple[str, str]], registry: ClientRegistry
) -> tuple[OAuthClient, str, bool]:
    def only(name: str) -> str | None:
        values = [v for k, v in params if k == name and v != ""]
        if len(values) > 1:
            raise _page(f"parameter {name!r} is repeated")
        return values[0] if values else None

    client_id = only("client_id")
    if client_id is None:
        raise _page("client_id is missing")
    client = registry.get(client_id) if len(client_id) <= 255 else None
    if client is None:
        raise _page("unknown client_id")
    uri = only("redirect_uri")
    if uri is None:
        if len(client.redirect_uris) != 1:
            raise _page("redirect_uri is required: the client registered several")
        return client, client.redirect_uris[0], False
    if uri not in client.redirect_uris:  # exact string match, no normalisation
        raise _page("redirect_uri is not registered for this client")
    return client, uri, True


def parse_authorization_request(
    request: OAuthRequest, registry: ClientRegistry, issuer: str
) -> AuthorizationRequest:
    """Validate an authorization request (GET query, RFC 6749 §4.1.1 + RFC 7636 §4.3).

    :raises AuthorizationError: with a redirect once client and redirect URI are valid.
    """
    if request.method.upper() not in ("GET", "POST"):
        raise _page("the authorization endpoint accepts GET (or POST)")
    query = urlsplit(request.url).query
    if request.method.upper() == "POST":
        query = request.body.decode("utf-8", "replace")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise _page("the request has too many parameters") from None
    client, uri, given = _client_and_redirect(pairs, registry)
    raw_state = [v for k, v in pairs if k == "state"]
    state = raw_state[0][:_MAX_STATE] if len(raw_state) == 1 and raw_state[0] else None

    def fail(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri=uri, state=state, issuer=issuer)

    try:
        params = params_once(pairs)
    except OAuthError as exc:
        raise fail("invalid_request", exc.description) from None
    if "state" in params and len(params["state"]) > _MAX_STATE:
        raise fail("invalid_request", f"state is longer than {_MAX_STATE} characters")
    if "request" in params or "request_uri" in params:
        raise fail("request_not_supported", "request objects are not supported")
    response_type = params.get("response_type")
    if response_type is None:
        raise fail("invalid_request", "response_type is missing")
    if response_type != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    if params.get("response_mode", "query") != "query":
        raise fail("invalid_request", "only response_mode=query is supported")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "this client may not use the authorization code grant")
    scopes = params.get("scope", client.scope).split()
    if not scopes or not set(scopes) <= client.scopes:
        raise fail("invalid_scope", "the requested scope is empty or not allowed for this client")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        raise fail("invalid_request", "code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256 (plain is refused)")
    if not _CHALLENGE.fullmatch(challenge):
        raise fail("invalid_request", "code_challenge must be 43 base64url characters")
    return AuthorizationRequest(
        client_id=client.client_id,
        client_name=client.name,
        tenant=client.tenant,
        redirect_uri=uri,
        redirect_uri_given=given,
        scopes=tuple(dict.fromkeys(scopes)),
        state=state,
        code_challenge=challenge,
    )
