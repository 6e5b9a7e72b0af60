"""TokenService: issues RFC 9068 access tokens and rotating refresh tokens.

::

    service = TokenService(KeySet.generate("EdDSA"), issuer="https://id.example",
                           audience="orders-api", refresh_store=SqlRefreshTokenStore(engine),
                           deny_list=SqlDenyList(engine), audit=audit_log)
    grant = service.issue(subject="u-1", client_id="rider-app", scope="orders:read",
                          refresh=True)
    grant.to_response()                      # the RFC 6749 §5.1 token response body
    grant = service.refresh(grant.refresh_token, client_id="rider-app")
    service.jwks()                           # publish at the JWKS URI

Access tokens are JWS with header ``{"alg", "typ": "at+jwt", "kid"}`` and the claims
``iss sub aud exp iat jti client_id`` plus ``scope``, ``tenant`` (the merchant or tenant
domain), ``roles`` and ``cnf.jkt`` (DPoP-bound tokens) when they apply.

Refresh tokens are opaque, stored hashed and rotated on every use. Presenting a used one
revokes its whole family (OAuth 2.0 Security BCP §4.14.2): every refresh token of it and
every access token issued from it. Each refresh record names the access token issued with
it, so the store hands back the family's access-token ids and the service puts them on the
deny-list; verifiers keep checking ``jti`` only (see :mod:`riskguard.auth._refresh`).

Everything is audited (``auth.token_issue``, ``auth.token_refresh``,
``auth.refresh_reuse``, ``auth.token_revoke``) with ids only: ``jti``, family id,
``client_id``, never a token or a hash of one.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from riskguard.auth._access import AccessToken, TokenGrant, mint_access_token
from riskguard.auth._claims import (
    check_extra_claims,
    check_identifier,
    check_jkt,
    normalise_roles,
    normalise_scope,
)
from riskguard.auth._denylist import DenyListStore
from riskguard.auth._errors import GrantRejected
from riskguard.auth._keys import IssuerKey, KeySet
from riskguard.auth._refresh import (
    MAX_LEEWAY,
    RefreshRecord,
    RefreshTokenStore,
    hash_refresh_token,
)
from riskguard.auth._revocation import MESSAGES, AuthEvents, Revocations, actor_for
from riskguard.auth._verifier import TokenVerifier
from riskguard.context import SubjectType
from riskguard.errors import ConfigError
from riskguard.types import AuditRecorder, ResourceRef

if TYPE_CHECKING:
    from riskguard.config import AuthSettings

__all__ = ["AccessToken", "TokenGrant", "TokenService"]

_MAX_PRESENTED = 512  # longest refresh token looked up; ours are 43 characters
_SUBJECT_TYPES = ("user", "service", "staff")
_TEN_YEARS = 10 * 365 * 86_400


def _now(now: float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError("now must be seconds since the epoch")
    return float(now)


def _seconds(name: str, value: float, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ConfigError(f"{name} must be a number of seconds in [{low:g}, {high:g}]", key=name)
    return float(value)


class TokenService:
    """Issue, refresh and revoke tokens (the authorisation server's token logic).

    :param keys: the signing key set (see :class:`KeySet`).
    :param issuer: the ``iss`` of every token (the issuer identifier, RFC 8414).
    :param audience: the default ``aud`` (the resource server's identifier).
    :param access_token_ttl: access-token lifetime in seconds (30 s … 1 day).
    :param refresh_token_ttl: refresh-token lifetime in seconds, restarted by each rotation.
    :param refresh_max_lifetime: optional cap on a family's life from its first grant.
    :param leeway: the largest clock-skew leeway of the verifiers (≤ 300 s): revocations
        and key overlap last that much past a token's ``exp``.
    :param refresh_store: where refresh-token families live; needed for refresh tokens.
    :param deny_list: where revoked access-token ids go; needed with a refresh store
        (reuse detection revokes access tokens) and for :meth:`revoke_access_token`.
    :param audit: where events go; ``None`` records none (tests, tools).
    :raises ConfigError: an option is out of range, or a refresh store without deny-list.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        access_token_ttl: float = 300,
        refresh_token_ttl: float = 30 * 86_400,
        refresh_max_lifetime: float | None = None,
        leeway: float = 30,
        refresh_store: RefreshTokenStore | None = None,
        deny_list: DenyListStore | None = None,
        audit: AuditRecorder | None = None,
    ) -> None:
        if not isinstance(keys, KeySet):
            raise ConfigError("keys must be a KeySet", key="keys")
        for name, text in (("issuer", issuer), ("audience", audience)):
            if not isinstance(text, str) or not text or len(text) > 255:
                raise ConfigError(f"{name} must be a non-empty string", key=name)
        self._ttl = int(_seconds("access_token_ttl", access_token_ttl, 30, 86_400))
        self._refresh_ttl = _seconds("refresh_token_ttl", refresh_token_ttl, self._ttl, _TEN_YEARS)
        self._max_life: float | None = None
        if refresh_max_lifetime is not None:
            self._max_life = _seconds(
                "refresh_max_lifetime", refresh_max_lifetime, self._refresh_ttl, _TEN_YEARS
            )
        self._leeway = _seconds("leeway", leeway, 0, MAX_LEEWAY)
        if refresh_store is not None and deny_list is None:
            raise ConfigError(
                "a refresh store needs a deny-list: reuse detection revokes the family's "
                "access tokens there",
                key="deny_list",
            )
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._refresh_store = refresh_store
        self._deny_list = deny_list
        self._events = AuthEvents(audit)
        self._revocations = (
            None
            if refresh_store is None or deny_list is None
            else Revocations(refresh_store, deny_list, self._events, self._leeway)
        )

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        keys: KeySet,
        *,
        refresh_store: RefreshTokenStore | None = None,
        deny_list: DenyListStore | None = None,
        audit: AuditRecorder | None = None,
    ) -> TokenService:
        """A service configured by ``[auth]`` (issuer, audience, lifetimes, leeway).

        :raises ConfigError: the access-token lifetime exceeds ``max_lifetime_s`` (the
            verifiers would refuse every token), or ``keys`` signs with another
            algorithm than ``algorithm``.
        """
        if settings.access_token_ttl_s > settings.max_lifetime_s:
            raise ConfigError(
                "access_token_ttl_s exceeds max_lifetime_s: verifiers would refuse the tokens",
                key="auth.access_token_ttl_s",
            )
        if keys.current.alg != settings.algorithm:
            raise ConfigError(
                f"the current signing key is {keys.current.alg}, [auth] algorithm is "
                f"{settings.algorithm}",
                key="auth.algorithm",
            )
        return cls(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            access_token_ttl=settings.access_token_ttl_s,
            refresh_token_ttl=settings.refresh_token_ttl_s,
            leeway=settings.leeway_s,
            refresh_store=refresh_store,
            deny_list=deny_list,
            audit=audit,
        )

    # -- keys ---------------------------------------------------------------------------

    @property
    def keys(self) -> KeySet:
        """The signing key set."""
        return self._keys

    @property
    def issuer(self) -> str:
        """The ``iss`` of issued tokens."""
        return self._issuer

    def jwks(self, *, now: float | None = None) -> dict[str, Any]:
        """The public JWKS to serve: current, next and still-valid previous keys."""
        return self._keys.jwks(now=now)

    def rotate_keys(
        self, *, now: float | None = None, next_key: IssuerKey | None = None
    ) -> IssuerKey:
        """Promote the next signing key; the old one stays published for the access-token
        lifetime plus the leeway, so tokens it signed keep verifying until they expire.

        :returns: the new current key.
        """
        return self._keys.rotate(now=now, overlap=self._ttl + self._leeway, next_key=next_key)

    def verifier(self, *, now: float | None = None, **options: Any) -> TokenVerifier:
        """A :class:`TokenVerifier` for this service's tokens, in this process (HS256
        secrets included), with this service's deny-list. Build a new one after
        :meth:`rotate_keys`; ``options`` override the verifier's keyword arguments."""
        kwargs: dict[str, Any] = {
            "issuer": self._issuer,
            "audience": self._audience,
            "leeway": self._leeway,
            "max_lifetime": self._ttl,
            "deny_list": self._deny_list,
        }
        kwargs.update(options)
        return TokenVerifier(self._keys.verification_jwks(now=now), **kwargs)

    # -- issuing ------------------------------------------------------------------------

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        scope: str | Iterable[str] = (),
        audience: str | None = None,
        tenant: str | None = None,
        roles: Iterable[str] = (),
        jkt: str | None = None,
        subject_type: SubjectType = "user",
        extra_claims: Mapping[str, Any] | None = None,
        refresh: bool = False,
        now: float | None = None,
    ) -> TokenGrant:
        """Issue an access token (and, with ``refresh=True``, the first refresh token of a
        new family) after the application has authenticated the grant.

        :param subject: ``sub``: the user's (or, for client credentials, the client's)
            opaque id; never a phone number or e-mail address.
        :param client_id: the OAuth client the token is issued to.
        :param scope: granted scope (a space-separated string or a list).
        :param audience: ``aud``; the service's default audience when omitted.
        :param tenant: the merchant or tenant domain the subject acts in.
        :param roles: role names, as in :class:`riskguard.context.Principal`.
        :param jkt: the DPoP key thumbprint (``cnf.jkt``): the token is then DPoP-bound,
            and so is the refresh token.
        :param subject_type: ``user``, ``service`` or ``staff`` (for the audit actor).
        :param extra_claims: further claims (``auth_time``, ``acr``, ``amr``…); no
            registered names, no secrets or personal data.
        :param refresh: also issue a refresh token (needs a refresh store).
        :raises ValueError: a malformed or sensitive argument.
        :raises ConfigError: ``refresh=True`` without a refresh store.
        :raises StorageError: the refresh store failed; no token was issued.
        """
        t = _now(now)
        check_identifier("subject", subject, sensitive=True)
        check_identifier("client_id", client_id)
        aud = check_identifier("audience", self._audience if audience is None else audience)
        if tenant is not None:
            check_identifier("tenant", tenant)
        if jkt is not None:
            check_jkt(jkt)
        if subject_type not in _SUBJECT_TYPES:
            raise ValueError(f"subject_type must be one of {', '.join(_SUBJECT_TYPES)}")
        scope_text = normalise_scope(scope)
        role_list = normalise_roles(roles)
        extra = check_extra_claims(extra_claims)
        store = self._require_refresh_store()[0] if refresh else None
        access = mint_access_token(
            self._keys.current, issuer=self._issuer, ttl=self._ttl, subject=subject,
            client_id=client_id, scope=scope_text, audience=aud, tenant=tenant, roles=role_list,
            jkt=jkt, extra=extra, now=t,
        )  # fmt: skip
        token: str | None = None
        family: str | None = None
        if store is not None:
            token = secrets.token_urlsafe(32)
            family = secrets.token_urlsafe(16)
            store.create(
                RefreshRecord(
                    token_hash=hash_refresh_token(token),
                    family_id=family,
                    generation=1,
                    client_id=client_id,
                    subject=subject,
                    subject_type=subject_type,
                    scope=scope_text,
                    audience=aud,
                    issued_at=t,
                    expires_at=self._refresh_expiry(t, t),
                    family_issued_at=t,
                    tenant=tenant,
                    roles=role_list,
                    jkt=jkt,
                    claims=extra,
                    access_jti=access.jti,
                    access_exp=float(access.expires_at),
                )
            )
        details: dict[str, Any] = {"jti": access.jti, "client_id": client_id}
        if family is not None:
            details.update(family=family, generation=1)
        self._events.record(
            "auth.token_issue", "success",
            actor=actor_for(subject, subject_type, tenant, role_list),
            resource=ResourceRef("access_token", access.jti, tenant), details=details,
        )  # fmt: skip
        return TokenGrant(access, token, family)

    def _refresh_expiry(self, now: float, family_issued_at: float) -> float:
        expiry = now + self._refresh_ttl
        if self._max_life is not None:
            expiry = min(expiry, family_issued_at + self._max_life)
        return expiry

    def _require_refresh_store(self) -> tuple[RefreshTokenStore, Revocations]:
        if self._refresh_store is None or self._revocations is None:
            raise ConfigError(
                "this TokenService has no refresh store", key="refresh_store",
                hint="pass refresh_store= (and deny_list=) to issue refresh tokens",
            )  # fmt: skip
        return self._refresh_store, self._revocations

    def _require_deny_list(self) -> DenyListStore:
        if self._deny_list is None:
            raise ConfigError("this TokenService has no deny-list", key="deny_list")
        return self._deny_list

    # -- refreshing ---------------------------------------------------------------------

    def refresh(
        self,
        refresh_token: str,
        *,
        client_id: str,
        scope: str | Iterable[str] | None = None,
        jkt: str | None = None,
        now: float | None = None,
    ) -> TokenGrant:
        """The ``refresh_token`` grant: rotate the refresh token, issue an access token.

        :param refresh_token: the presented token.
        :param client_id: the authenticated client; it must be the one the token was
            issued to.
        :param scope: a narrower scope for the new access token (the refresh token keeps
            the original grant).
        :param jkt: the thumbprint of the key of the request's verified DPoP proof; a
            DPoP-bound refresh token needs the same key.
        :raises GrantRejected: ``invalid_refresh_token``, ``expired``, ``reused`` (the
            family is now revoked), ``revoked``, ``client_mismatch``, ``dpop_mismatch``
            (all ``invalid_grant``) or ``scope_exceeded`` (``invalid_scope``).
        :raises StorageError: a store failed.
        """
        t = _now(now)
        store, revocations = self._require_refresh_store()
        refused = self._events.refused
        if not isinstance(refresh_token, str) or not 0 < len(refresh_token) <= _MAX_PRESENTED:
            refused(None, "invalid_refresh_token", client_id)
        token_hash = hash_refresh_token(refresh_token)
        rec = store.get(token_hash)
        if rec is None:
            refused(None, "invalid_refresh_token", client_id)
        if rec.client_id != client_id:
            refused(rec, "client_mismatch", client_id)
        if rec.jkt is not None and jkt != rec.jkt:
            refused(rec, "dpop_mismatch", client_id)
        granted = rec.scope
        if scope is not None:
            try:
                granted = normalise_scope(scope)
            except ValueError:
                refused(rec, "scope_exceeded", client_id)
            if not set(granted.split()) <= set(rec.scope.split()):
                refused(rec, "scope_exceeded", client_id)
        successor_expiry = self._refresh_expiry(t, rec.family_issued_at)
        if rec.expires_at <= t or successor_expiry <= t:
            refused(rec, "expired", client_id)
        access_jkt = jkt if jkt is not None else rec.jkt
        if access_jkt is not None:
            check_jkt(access_jkt)
        access = mint_access_token(
            self._keys.current, issuer=self._issuer, ttl=self._ttl, subject=rec.subject,
            client_id=rec.client_id, scope=granted, audience=rec.audience, tenant=rec.tenant,
            roles=rec.roles, jkt=access_jkt, extra=rec.claims, now=t,
        )  # fmt: skip
        new_token = secrets.token_urlsafe(32)
        successor = RefreshRecord(
            token_hash=hash_refresh_token(new_token),
            family_id=rec.family_id,
            generation=rec.generation + 1,
            client_id=rec.client_id,
            subject=rec.subject,
            subject_type=rec.subject_type,
            scope=rec.scope,
            audience=rec.audience,
            issued_at=t,
            expires_at=successor_expiry,
            family_issued_at=rec.family_issued_at,
            tenant=rec.tenant,
            roles=rec.roles,
            jkt=rec.jkt,
            claims=rec.claims,
            access_jti=access.jti,
            access_exp=float(access.expires_at),
        )
        result = store.rotate(token_hash, successor, now=t)
        if result.status != "rotated":
            revocations.rotation_refused(result, rec, client_id, t)
        self._events.record(
            "auth.token_refresh", "success",
            actor=actor_for(rec.subject, rec.subject_type, rec.tenant, rec.roles),
            resource=ResourceRef("refresh_family", rec.family_id, rec.tenant),
            details={"jti": access.jti, "client_id": rec.client_id, "family": rec.family_id,
                     "generation": successor.generation},
        )  # fmt: skip
        return TokenGrant(access, new_token, rec.family_id)

    def refresh_token_record(self, refresh_token: str) -> RefreshRecord | None:
        """The stored record of a presented refresh token, or ``None`` when it is
        malformed or unknown (for RFC 7662 introspection; nothing is changed).

        :raises ConfigError: this service has no refresh store.
        :raises StorageError: the store failed.
        """
        store = self._require_refresh_store()[0]
        if not isinstance(refresh_token, str) or not 0 < len(refresh_token) <= _MAX_PRESENTED:
            return None
        return store.get(hash_refresh_token(refresh_token))

    # -- revoking -----------------------------------------------------------------------

    def revoke_refresh_token(
        self, refresh_token: str, *, client_id: str | None = None, now: float | None = None
    ) -> bool:
        """Revoke a refresh token's whole family and its access tokens (RFC 7009 §2.1).

        :param client_id: the authenticated client making the request; when given, it
            must be the one the token was issued to.
        :returns: ``False`` when the token is unknown (RFC 7009 answers 200 all the same).
        :raises GrantRejected: ``client_mismatch``.
        :raises StorageError: a store failed.
        """
        t = _now(now)
        store, revocations = self._require_refresh_store()
        if not isinstance(refresh_token, str) or not 0 < len(refresh_token) <= _MAX_PRESENTED:
            return False
        rec = store.get(hash_refresh_token(refresh_token))
        if rec is None:
            return False
        if client_id is not None and rec.client_id != client_id:
            raise GrantRejected("client_mismatch", MESSAGES["client_mismatch"])
        return revocations.revoke_family(rec.family_id, t, "revoked", rec)

    def revoke_family(
        self, family_id: str, *, now: float | None = None, reason: str = "revoked"
    ) -> bool:
        """Revoke a refresh-token family and its access tokens (logout, an operator's
        action). ``reason`` is a short code kept with the family and in the audit event.

        :returns: ``False`` when the family is unknown.
        :raises StorageError: a store failed.
        """
        t = _now(now)
        return self._require_refresh_store()[1].revoke_family(family_id, t, reason, None)

    def revoke_access_token(
        self,
        jti: str,
        *,
        expires_at: float,
        client_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """Put one access token on the deny-list until it would expire (its ``exp``)
        plus the leeway.

        :raises ValueError: ``jti`` is empty or longer than 255 characters.
        :raises ConfigError: this service has no deny-list.
        :raises StorageError: the deny-list failed.
        """
        t = _now(now)
        self._require_deny_list().revoke(jti, expires_at=float(expires_at) + self._leeway, now=t)
        details: dict[str, Any] = {"jti": jti}
        if client_id is not None:
            details["client_id"] = client_id
        self._events.record(
            "auth.token_revoke", "success", actor=None,
            resource=ResourceRef("access_token", jti), details=details,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"TokenService(issuer={self._issuer!r}, keys={self._keys!r})"
