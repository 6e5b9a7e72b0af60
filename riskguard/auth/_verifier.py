"""TokenVerifier: RFC 8725 / RFC 9068 access-token verification on top of PyJWT.

Checks run cheapest-first and the payload is parsed only after the signature holds:

1. size cap (before any decoding), compact form: three canonical unpadded base64url parts;
2. header: strict JSON object; ``crit`` understood; only ``alg``, ``typ``, ``kid`` and
   ``crit`` (plus what ``critical=`` names): ``jwk``, ``jku``, ``x5u``, ``x5c`` and every
   other key-carrying or unknown parameter are refused;
3. ``alg`` is a supported algorithm (never ``none``), ``kid`` names a trusted key, and
   ``alg`` equals the algorithm that key is pinned to; ``typ`` is the expected media type;
4. the signature, by PyJWT's algorithm objects over keys prepared once (ES256: raw 64-byte
   r||s with r, s in [1, n-1]);
5. payload: strict JSON object; required claims; claim types (NumericDates are finite JSON
   numbers, never strings or booleans); ``iss`` and ``aud`` exact; ``exp``, ``nbf``,
   ``iat`` with leeway; lifetime cap; ``jti`` against the deny-list; ``cnf`` only with a
   valid DPoP proof.

Key selection: every trusted JWK carries a ``kid``. A token without ``kid`` is accepted
only while the JWKS holds exactly one key (then that key, with its pinned ``alg``, is the
only candidate); with several keys it is ``unknown_kid``, so adding a key during rotation
makes issuers that omit ``kid`` fail loudly rather than ambiguously.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from riskguard.auth._codec import is_numeric_date
from riskguard.auth._compact import decode_segment, parse_compact
from riskguard.auth._denylist import DenyList
from riskguard.auth._dpop import check_proof
from riskguard.auth._errors import TokenRejected
from riskguard.auth._jwks import VerifyingKey, parse_jwks
from riskguard.auth._replay import MemoryReplayCache, ReplayCache
from riskguard.errors import ConfigError

if TYPE_CHECKING:
    from riskguard.config import AuthSettings

__all__ = ["DEFAULT_REQUIRED_CLAIMS", "TokenVerifier", "VerifiedToken"]

#: RFC 9068 §2.2 claims beyond ``iss``, ``aud`` and ``exp`` (which are always required).
DEFAULT_REQUIRED_CLAIMS: tuple[str, ...] = ("sub", "client_id", "iat", "jti")

_BASE_HEADER = frozenset({"alg", "typ", "kid", "crit"})
# Header parameters that carry or point at keys (RFC 7515 §4.1.2-4.1.6): named in the
# error so an operator sees the attack class; other names are not echoed.
_KEY_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})
_STRING_CLAIMS = ("sub", "client_id", "scope", "jti")
_ABSENT = object()
_HEADER_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that passed every check: its ``header``, ``claims`` and trusted ``kid``."""

    header: dict[str, Any]
    claims: dict[str, Any]
    kid: str


def _reject(code: str, message: str) -> TokenRejected:
    return TokenRejected(code, message)


def _timestamp(now: float | datetime | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime (UTC) or seconds since the epoch")
        return now.timestamp()
    return float(now)


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        if name in claims:
            raise _reject("bad_claim_type", f"the {name} claim is null")
        return None
    if is_numeric_date(value):
        return float(value)
    raise _reject(
        "bad_claim_type",
        f"the {name} claim must be a NumericDate: a JSON number of seconds since the epoch",
    )


def _media_type(typ: str) -> str:
    typ = typ.lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


class TokenVerifier:
    """Verify JWT access tokens against a pinned JWKS, strictly (RFC 8725, RFC 9068).

    ::

        verifier = TokenVerifier(jwks, issuer="https://id.example", audience="orders-api")
        claims = verifier.verify(token)                       # raises TokenRejected
        claims = verifier.verify(token, dpop=proof, method="POST", url=request_url)

    :param jwks: a JWKS dict; every key needs ``kid`` and ``alg`` (``EdDSA``, ``ES256``,
        ``RS256`` or ``HS256``), asymmetric keys must be public, HS256 secrets ≥ 256 bits.
    :param issuer: the exact ``iss`` accepted.
    :param audience: the ``aud`` (or one of the ``aud`` list) that must name this API.
    :param leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    :param max_lifetime: longest accepted ``exp - iat`` (``exp - now`` without ``iat``).
    :param typ: the expected ``typ``, compared case-insensitively with or without the
        ``application/`` prefix (RFC 7515 §4.1.9).
    :param required_claims: claims that must be present besides ``iss``, ``aud``, ``exp``.
    :param deny_list: revoked ``jti`` values; when given, ``jti`` is required.
    :param max_token_bytes: longer tokens (and DPoP proofs) are refused undecoded.
    :param critical: ``crit`` extensions the caller understands and processes itself
        (they are then also allowed as header parameters); none by default.
    :param dpop_max_age: how old (seconds) a DPoP proof's ``iat`` may be.
    :param dpop_replay: where DPoP proof ids are remembered; by default this verifier's
        own :class:`MemoryReplayCache` (pass a shared one when several processes serve).
    :raises KeyManagementError: the JWKS is unusable (see :func:`parse_jwks`).
    :raises ConfigError: an option is out of range.
    """

    def __init__(
        self,
        jwks: Mapping[str, Any],
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        max_lifetime: float = 3600.0,
        typ: str = "at+jwt",
        required_claims: Iterable[str] = DEFAULT_REQUIRED_CLAIMS,
        deny_list: DenyList | None = None,
        max_token_bytes: int = 8192,
        critical: Iterable[str] = (),
        dpop_max_age: float = 300.0,
        dpop_replay: ReplayCache | None = None,
    ) -> None:
        for name, text in (("issuer", issuer), ("audience", audience), ("typ", typ)):
            if not isinstance(text, str) or not text:
                raise ConfigError(f"{name} must be a non-empty string", key=name)
        for name, number, low in (
            ("leeway", leeway, 0),
            ("max_lifetime", max_lifetime, 1),
            ("max_token_bytes", max_token_bytes, 256),
            ("dpop_max_age", dpop_max_age, 1),
        ):
            if (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not math.isfinite(number)
                or number < low
            ):
                raise ConfigError(f"{name} must be a number ≥ {low}", key=name)
        for name, names in (("required_claims", required_claims), ("critical", critical)):
            if isinstance(names, str):  # a bare string would be read as its characters
                raise ConfigError(f"{name} must be a list of names, not a string", key=name)
        critical = frozenset(critical)
        if critical & (_BASE_HEADER | _KEY_HEADERS):
            raise ConfigError("critical may not name a registered header parameter")
        self._keys = parse_jwks(jwks)
        self._sole = next(iter(self._keys.values())) if len(self._keys) == 1 else None
        self._algs = frozenset(k.alg for k in self._keys.values())
        self._issuer = issuer
        self._audience = audience
        self._leeway = float(leeway)
        self._max_lifetime = float(max_lifetime)
        self._typ = _media_type(typ)
        self._required = tuple(dict.fromkeys(("exp", "iss", "aud", *required_claims)))
        self._deny_list = deny_list
        self._max_bytes = int(max_token_bytes)
        self._critical = critical
        self._header_params = _BASE_HEADER | critical
        self._dpop_max_age = float(dpop_max_age)
        self._dpop_replay = MemoryReplayCache() if dpop_replay is None else dpop_replay
        self._headers: dict[str, tuple[dict[str, Any], VerifyingKey]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        jwks: Mapping[str, Any],
        *,
        deny_list: DenyList | None = None,
        **options: Any,
    ) -> TokenVerifier:
        """A verifier configured by ``[auth]`` (issuer, audience, leeway, lifetime, size);
        ``options`` override or add keyword arguments of the constructor."""
        kwargs: dict[str, Any] = {
            "issuer": settings.issuer,
            "audience": settings.audience,
            "leeway": settings.leeway_s,
            "max_lifetime": settings.max_lifetime_s,
            "max_token_bytes": settings.max_token_bytes,
            "deny_list": deny_list,
        }
        kwargs.update(options)
        return cls(jwks, **kwargs)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ``kid`` of every trusted key."""
        return tuple(self._keys)

    def __repr__(self) -> str:
        return (
            f"TokenVerifier(issuer={self._issuer!r}, audience={self._audience!r}, "
            f"keys={list(self._keys)!r})"
        )

    def verify(
        self,
        token: str | bytes,
        *,
        now: float | datetime | None = None,
        dpop: str | bytes | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Verify ``token`` and return its claims.

        :param now: the time to judge ``exp``/``nbf``/``iat`` against (seconds since the
            epoch or an aware datetime); the current time by default.
        :param dpop: the request's ``DPoP`` header, needed when the token has ``cnf``.
        :param method: the request's HTTP method, for the DPoP ``htm`` check.
        :param url: the request's absolute URL, for the DPoP ``htu`` check.
        :raises TokenRejected: with a stable ``code`` (see :data:`CODES`).
        :raises StorageError: the deny-list could not be asked (fail closed).
        """
        return self._verify(token, now, dpop, method, url)[1]

    def verify_complete(
        self,
        token: str | bytes,
        *,
        now: float | datetime | None = None,
        dpop: str | bytes | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> VerifiedToken:
        """Like :meth:`verify`, returning the header and the trusted key's ``kid`` too.

        :raises TokenRejected: with a stable ``code`` (see :data:`CODES`).
        """
        header, claims, key = self._verify(token, now, dpop, method, url)
        return VerifiedToken(copy.deepcopy(header), claims, key.kid)

    def _verify(
        self,
        token: str | bytes,
        now: float | datetime | None,
        dpop: str | bytes | None,
        method: str | None,
        url: str | None,
    ) -> tuple[dict[str, Any], dict[str, Any], VerifyingKey]:
        text, header_seg, signing_input, payload_seg, signature = parse_compact(
            token, self._max_bytes
        )
        # One issuer signs every token with a handful of identical headers: what a header
        # segment means (its JSON and its key) is decided once. Only headers that passed
        # every header check are kept; the cache is emptied when full, so varied spellings
        # cannot grow it without bound.
        cached = self._headers.get(header_seg)
        if cached is None:
            header = decode_segment(header_seg, "header")
            key = self._key_for(header)
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.clear()
            self._headers[header_seg] = (header, key)
        else:
            header, key = cached
        problem = key.check(signing_input, signature)
        if problem is not None:
            raise _reject("bad_signature", problem)
        claims = decode_segment(payload_seg, "payload")
        t = _timestamp(now)
        self._check_claims(claims, t)
        if "cnf" in claims:
            self._check_binding(claims["cnf"], text, dpop, method, url, t)
        return header, claims, key

    def _key_for(self, header: dict[str, Any]) -> VerifyingKey:
        if "crit" in header:
            self._check_crit(header)
        extra = header.keys() - self._header_params
        if extra:
            named = sorted(extra & _KEY_HEADERS)
            what = f"key-carrying parameter {', '.join(named)}" if named else "a parameter"
            raise _reject("bad_header", f"the header carries {what} outside the allow-list")
        alg = header.get("alg")
        if type(alg) is not str:
            raise _reject("bad_alg", "the header has no alg string")
        if alg not in self._algs:
            if alg.lower() == "none":
                raise _reject("bad_alg", "unsecured tokens (alg none) are never accepted")
            raise _reject("bad_alg", "the header's alg is not an algorithm of a trusted key")
        kid = header.get("kid", _ABSENT)
        if kid is _ABSENT:
            if self._sole is None:
                raise _reject("unknown_kid", "the header has no kid and several keys are trusted")
            key = self._sole
        elif type(kid) is not str:
            raise _reject("bad_header", "the header's kid is not a string")
        else:
            found = self._keys.get(kid)
            if found is None:
                raise _reject("unknown_kid", "the header's kid names no trusted key")
            key = found
        if alg != key.alg:
            raise _reject("bad_alg", "the header's alg is not the algorithm pinned to its key")
        typ = header.get("typ")
        if type(typ) is not str:
            raise _reject("bad_typ", f"the header has no typ (expected {self._typ})")
        if _media_type(typ) != self._typ:
            raise _reject("bad_typ", f"the header's typ is not {self._typ}")
        return key

    def _check_crit(self, header: dict[str, Any]) -> None:
        crit = header["crit"]
        if type(crit) is not list or not crit or any(type(n) is not str for n in crit):
            raise _reject("bad_header", "crit must be a non-empty list of names")
        if len(set(crit)) != len(crit):
            raise _reject("bad_header", "crit lists a name twice")
        if not self._critical.issuperset(crit):
            raise _reject("unsupported_crit", "crit names an extension this API does not support")
        if any(name not in header for name in crit):
            raise _reject("bad_header", "crit names a parameter the header does not carry")

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        for name in self._required:
            if name not in claims:
                raise _reject("missing_claim", f"the {name} claim is required")
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        assert exp is not None  # required above; a null exp was refused as bad_claim_type
        for name in _STRING_CLAIMS:
            if name in claims and type(claims[name]) is not str:
                raise _reject("bad_claim_type", f"the {name} claim must be a string")
        iss = claims["iss"]
        if type(iss) is not str:
            raise _reject("bad_claim_type", "the iss claim must be a string")
        aud = claims["aud"]
        if type(aud) is str:
            aud_ok = aud == self._audience
        elif type(aud) is list and all(type(a) is str for a in aud):
            aud_ok = self._audience in aud
        else:
            raise _reject("bad_claim_type", "the aud claim must be a string or list of strings")
        if iss != self._issuer:
            raise _reject("bad_issuer", "the token was not issued by the expected issuer")
        if not aud_ok:
            raise _reject("bad_audience", "the token is not meant for this audience")
        leeway = self._leeway
        if now >= exp + leeway:
            raise _reject("expired", "the token has expired")
        if nbf is not None and nbf > now + leeway:
            raise _reject("not_yet_valid", "the token is not valid yet (nbf)")
        if iat is not None:
            if iat > now + leeway:
                raise _reject("issued_in_future", "the token was issued in the future (iat)")
            if exp - iat > self._max_lifetime:
                raise _reject("lifetime_too_long", "exp - iat exceeds the maximum lifetime")
        elif exp - now > self._max_lifetime + leeway:
            raise _reject("lifetime_too_long", "exp is further away than the maximum lifetime")
        if self._deny_list is not None:
            jti = claims.get("jti")
            if jti is None:
                raise _reject("missing_claim", "the jti claim is required (revocation is on)")
            if self._deny_list.is_revoked(jti):
                raise _reject("revoked", "the token has been revoked")

    def _check_binding(
        self,
        cnf: Any,
        token: str,
        dpop: str | bytes | None,
        method: str | None,
        url: str | None,
        now: float,
    ) -> None:
        jkt = cnf.get("jkt") if type(cnf) is dict else None
        if type(jkt) is not str or not jkt:
            raise _reject(
                "bad_claim_type", "cnf must be an object with a jkt: only DPoP binding is known"
            )
        if dpop is None:
            raise _reject("dpop_required", "the token is DPoP-bound and no DPoP proof was sent")
        if method is None or url is None:
            raise TypeError("verify() needs method= and url= to check a DPoP proof")
        check_proof(
            dpop,
            access_token=token,
            jkt=jkt,
            method=method,
            url=url,
            now=now,
            leeway=self._leeway,
            max_age=self._dpop_max_age,
            max_bytes=self._max_bytes,
            replay=self._dpop_replay,
        )
