"""Authentication: JWT access tokens (RFC 8725, RFC 9068, RFC 9449), issue and verify.

Verifying, at a resource server::

    from riskguard.auth import MemoryDenyList, TokenRejected, TokenVerifier

    verifier = TokenVerifier(jwks, issuer="https://id.example", audience="orders-api",
                             deny_list=MemoryDenyList())
    try:
        claims = verifier.verify(token)
    except TokenRejected as exc:
        status, challenge = exc.status_code, exc.www_authenticate()

Issuing, at the authorisation server::

    from riskguard.auth import KeySet, SqlDenyList, SqlRefreshTokenStore, TokenService

    service = TokenService(KeySet.generate("EdDSA"), issuer="https://id.example",
                           audience="orders-api", refresh_store=SqlRefreshTokenStore(engine),
                           deny_list=SqlDenyList(engine), audit=audit_log)
    grant = service.issue(subject="u-1", client_id="rider-app", scope="orders:read",
                          refresh=True)
    grant = service.refresh(grant.refresh_token, client_id="rider-app")  # GrantRejected

Every rejected token is a :class:`TokenRejected` (``oauth_error == "invalid_token"``) with a
stable ``code`` from :data:`CODES`; every refused grant a :class:`GrantRejected`
(``invalid_grant`` or ``invalid_scope``) with a code from :data:`GRANT_CODES`.

Public names:

* verifier: :class:`TokenVerifier`, :class:`VerifiedToken`, :data:`DEFAULT_REQUIRED_CLAIMS`,
  :data:`SUPPORTED_ALGORITHMS`; errors :class:`TokenRejected`, :data:`CODES`;
* issuer: :class:`TokenService`, :class:`TokenGrant`, :class:`AccessToken`, keys
  :class:`KeySet`, :class:`IssuerKey`; errors :class:`GrantRejected`, :data:`GRANT_CODES`;
* plug points (Protocols) and their stores — memory, SQL, Redis — which pass one test
  suite: :class:`DenyList` / :class:`DenyListStore` (:class:`MemoryDenyList`,
  :class:`SqlDenyList`, ``RedisDenyList``), :class:`RefreshTokenStore`
  (:class:`MemoryRefreshTokenStore`, :class:`SqlRefreshTokenStore`,
  ``RedisRefreshTokenStore``) with :class:`RefreshRecord`, :class:`RotateResult`,
  :class:`AccessTokenRef`, :func:`hash_refresh_token`; :class:`ReplayCache`
  (:class:`MemoryReplayCache`, :class:`SqlReplayCache`, ``RedisReplayCache``);
* OAuth 2.0 server: :class:`OAuthServer` (token, authorization helper, RFC 7662
  introspection, RFC 7009 revocation, RFC 8414 metadata, JWKS) speaking
  :class:`OAuthRequest` / :class:`OAuthResponse`; clients :class:`OAuthClient` in a
  :class:`ClientRegistry` (:class:`MemoryClientRegistry`, :class:`SqlClientRegistry`),
  codes in an :class:`AuthorizationCodeStore` (:class:`MemoryAuthorizationCodeStore`,
  :class:`SqlAuthorizationCodeStore`); web mounts in :mod:`riskguard.integrations`;
* login hardening: :class:`LoginGuard` raising :class:`LoginThrottled`, on a
  :class:`CounterStore` (:class:`MemoryCounterStore`, :class:`SqlCounterStore`,
  ``RedisCounterStore``);
* DPoP helpers: :func:`jwk_thumbprint` (``cnf.jkt``), :func:`access_token_hash` (``ath``).

The ``Redis*`` stores are imported on first use and need the ``riskguard[redis]`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from riskguard.auth._authorize import AuthorizationError, AuthorizationRequest
from riskguard.auth._clients import (
    ClientRegistry,
    MemoryClientRegistry,
    OAuthClient,
    check_client_secret,
    hash_client_secret,
)
from riskguard.auth._codes import (
    AuthorizationCode,
    AuthorizationCodeStore,
    MemoryAuthorizationCodeStore,
)
from riskguard.auth._denylist import DenyList, DenyListStore, MemoryDenyList
from riskguard.auth._dpop import access_token_hash
from riskguard.auth._errors import CODES, GRANT_CODES, GrantRejected, TokenRejected
from riskguard.auth._jwks import SUPPORTED_ALGORITHMS, jwk_thumbprint
from riskguard.auth._keys import IssuerKey, KeySet
from riskguard.auth._oauth import METADATA_PATH, OAuthServer
from riskguard.auth._oauth_http import OAuthError, OAuthRequest, OAuthResponse
from riskguard.auth._refresh import (
    AccessTokenRef,
    MemoryRefreshTokenStore,
    RefreshRecord,
    RefreshTokenStore,
    RotateResult,
    hash_refresh_token,
)
from riskguard.auth._replay import MemoryReplayCache, ReplayCache
from riskguard.auth._service import AccessToken, TokenGrant, TokenService
from riskguard.auth._sql import SqlDenyList, SqlRefreshTokenStore, SqlReplayCache
from riskguard.auth._sql_oauth import SqlAuthorizationCodeStore, SqlClientRegistry
from riskguard.auth._throttle import (
    Counter,
    CounterStore,
    FailureResult,
    LoginGuard,
    LoginThrottled,
    MemoryCounterStore,
    ThrottlePolicy,
)
from riskguard.auth._throttle_sql import SqlCounterStore
from riskguard.auth._verifier import DEFAULT_REQUIRED_CLAIMS, TokenVerifier, VerifiedToken

if TYPE_CHECKING:
    from riskguard.auth._redis import RedisDenyList, RedisRefreshTokenStore, RedisReplayCache
    from riskguard.auth._throttle_redis import RedisCounterStore

__all__ = [
    "CODES",
    "DEFAULT_REQUIRED_CLAIMS",
    "GRANT_CODES",
    "METADATA_PATH",
    "SUPPORTED_ALGORITHMS",
    "AccessToken",
    "AccessTokenRef",
    "AuthorizationCode",
    "AuthorizationCodeStore",
    "AuthorizationError",
    "AuthorizationRequest",
    "ClientRegistry",
    "Counter",
    "CounterStore",
    "DenyList",
    "DenyListStore",
    "FailureResult",
    "GrantRejected",
    "IssuerKey",
    "KeySet",
    "LoginGuard",
    "LoginThrottled",
    "MemoryAuthorizationCodeStore",
    "MemoryClientRegistry",
    "MemoryCounterStore",
    "MemoryDenyList",
    "MemoryRefreshTokenStore",
    "MemoryReplayCache",
    "OAuthClient",
    "OAuthError",
    "OAuthRequest",
    "OAuthResponse",
    "OAuthServer",
    "RedisCounterStore",
    "RedisDenyList",
    "RedisRefreshTokenStore",
    "RedisReplayCache",
    "RefreshRecord",
    "RefreshTokenStore",
    "ReplayCache",
    "RotateResult",
    "SqlAuthorizationCodeStore",
    "SqlClientRegistry",
    "SqlCounterStore",
    "SqlDenyList",
    "SqlRefreshTokenStore",
    "SqlReplayCache",
    "ThrottlePolicy",
    "TokenGrant",
    "TokenRejected",
    "TokenService",
    "TokenVerifier",
    "VerifiedToken",
    "access_token_hash",
    "check_client_secret",
    "hash_client_secret",
    "hash_refresh_token",
    "jwk_thumbprint",
]

_LAZY = {
    "RedisDenyList": "riskguard.auth._redis",
    "RedisRefreshTokenStore": "riskguard.auth._redis",
    "RedisReplayCache": "riskguard.auth._redis",
    "RedisCounterStore": "riskguard.auth._throttle_redis",
}


def __getattr__(name: str) -> Any:
    # The Redis stores import redis, an optional extra: load them on first use only, so
    # that `import riskguard.auth` works without it and the ImportError names the extra.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
