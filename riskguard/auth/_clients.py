"""OAuth clients: registration records, hashed secrets, and the :class:`ClientRegistry`.

Three kinds of client use the platform (issue 6): the platform's own apps and third-party
apps acting for a user (``authorization_code`` with PKCE, often public clients with
``token_endpoint_auth_method="none"``), and merchants' own systems — POS, ERP — calling
platform APIs for their merchant (``client_credentials``, confidential).

Client secrets are chosen by people and by other systems, so they may be low-entropy and
are stored the way passwords are: scrypt (RFC 7914) with a per-client random salt, its
cost parameters kept in the encoded hash so they can be raised later, compared in constant
time. Unknown clients cost the same scrypt run as known ones (:func:`check_client_secret`
with no stored hash), so response time does not tell which client ids exist.

Redirect URIs are matched exactly, character for character (RFC 9700 §4.1.3): no prefix,
wildcard, case folding or normalisation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from riskguard.auth._claims import check_identifier, normalise_scope
from riskguard.errors import StorageError

__all__ = [
    "AUTH_METHODS",
    "GRANT_TYPES",
    "ClientRegistry",
    "MemoryClientRegistry",
    "OAuthClient",
    "check_client_secret",
    "hash_client_secret",
]

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

#: Token-endpoint client authentication methods (RFC 7591 §2).
AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post", "none")
#: Grant types the token endpoint implements.
GRANT_TYPES: tuple[str, ...] = ("authorization_code", "client_credentials", "refresh_token")

#: scrypt cost: N=2^15, r=8, p=1 (~32 MiB, tens of ms): OWASP's minimum for scrypt.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_MIN_SCRYPT_N = 2**14
_MAX_SECRET_BYTES = 512  # longer secrets are refused before any KDF work (CPU/memory DoS)
_MIN_SECRET_CHARS = 8
_CLIENT_ID = re.compile(r"[\x21-\x7E]{1,255}")  # visible ASCII (RFC 6749 VSCHAR minus space)
# A stored hash to compare with when the client is unknown, so that its cost is paid too.
_DECOY = "scrypt$15$8$1$" + "A" * 22 + "$" + "A" * 43


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=32)


def hash_client_secret(secret: str, *, cost: int = _SCRYPT_N) -> str:
    """The encoded scrypt hash of a client secret: ``scrypt$log2N$r$p$salt$hash``.

    :param cost: scrypt's N, a power of two ≥ 2^14.
    :raises ValueError: the secret is shorter than 8 characters or longer than 512
        bytes, or ``cost`` is out of range.
    """
    raw = _secret_bytes(secret)
    if raw is None or len(secret) < _MIN_SECRET_CHARS:
        raise ValueError(
            f"a client secret must be {_MIN_SECRET_CHARS} characters to {_MAX_SECRET_BYTES} "
            "bytes; generate one with secrets.token_urlsafe(32)"
        )
    if cost < _MIN_SCRYPT_N or cost & (cost - 1):
        raise ValueError("cost must be a power of two ≥ 2^14")
    log_n = cost.bit_length() - 1
    salt = secrets.token_bytes(16)
    digest = _scrypt(raw, salt, log_n, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${log_n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _secret_bytes(secret: object) -> bytes | None:
    if not isinstance(secret, str) or not secret:
        return None
    raw = secret.encode("utf-8", "surrogatepass")
    return raw if len(raw) <= _MAX_SECRET_BYTES else None


def check_client_secret(secret: object, encoded: str | None) -> bool:
    """``True`` when ``secret`` matches ``encoded`` (a :func:`hash_client_secret`).

    With ``encoded=None`` (unknown client, public client) it runs the same scrypt against
    a decoy and returns ``False``. The comparison is constant-time.
    """
    target = _DECOY if encoded is None else encoded
    try:
        scheme, log_n, r, p, salt, digest = target.split("$")
        params = int(log_n), int(r), int(p)
        expected = _unb64(digest)
        salt_bytes = _unb64(salt)
    except ValueError:
        return False
    if scheme != "scrypt" or not 14 <= params[0] <= 20 or not 1 <= params[1] <= 32:
        return False
    raw = _secret_bytes(secret)
    got = _scrypt(raw if raw is not None else b"\0", salt_bytes, *params)
    return hmac.compare_digest(got, expected) and raw is not None and encoded is not None


def _check_redirect_uri(uri: object) -> str:
    if not isinstance(uri, str) or not 0 < len(uri) <= 2000 or uri != uri.strip():
        raise ValueError("each redirect URI must be a non-empty string without spaces")
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise ValueError("a redirect URI must be absolute and have no fragment (RFC 6749 §3.1.2)")
    if "*" in uri:
        raise ValueError("redirect URIs are matched exactly: no wildcards")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError("http redirect URIs are allowed for loopback only; use https")
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ValueError(f"the {parts.scheme!r} scheme is not a redirect URI")
    return uri


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A registered client. Build one with :meth:`create`, which hashes the secret.

    ``tenant`` is the merchant or tenant domain the client belongs to: tokens issued by
    ``client_credentials`` act in it, and it appears on the consent page. ``roles`` go
    into its client-credentials tokens. ``can_introspect`` lets a resource server's
    client introspect tokens issued to other clients (RFC 7662 §4).
    """

    client_id: str
    secret_hash: str | None = field(repr=False)
    token_endpoint_auth_method: AuthMethod
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scope: str = ""
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    name: str | None = None
    can_introspect: bool = False

    @classmethod
    def create(
        cls,
        client_id: str,
        *,
        secret: str | None = None,
        token_endpoint_auth_method: AuthMethod = "client_secret_basic",
        redirect_uris: Iterable[str] = (),
        grant_types: Iterable[str] = ("authorization_code", "refresh_token"),
        scope: str | Iterable[str] = (),
        tenant: str | None = None,
        roles: Iterable[str] = (),
        name: str | None = None,
        can_introspect: bool = False,
        secret_cost: int = _SCRYPT_N,
    ) -> OAuthClient:
        """Validate a registration and hash its secret.

        :param secret: the client secret (confidential clients only).
        :param scope: every scope the client may ask for.
        :raises ValueError: an inconsistent or malformed registration, naming the field.
        """
        secret_hash = None
        if token_endpoint_auth_method != "none":
            if secret is None:
                raise ValueError(f"{token_endpoint_auth_method} needs a client secret")
            secret_hash = hash_client_secret(secret, cost=secret_cost)
        elif secret is not None:
            raise ValueError("a public client (token_endpoint_auth_method='none') has no secret")
        client = cls(
            client_id=client_id,
            secret_hash=secret_hash,
            token_endpoint_auth_method=token_endpoint_auth_method,
            redirect_uris=tuple(redirect_uris),
            grant_types=tuple(dict.fromkeys(grant_types)),
            scope=normalise_scope(scope),
            tenant=tenant,
            roles=tuple(roles),
            name=name,
            can_introspect=can_introspect,
        )
        client.validate()
        return client

    def validate(self) -> None:
        """Check the registration's consistency (also run on records read from a store).

        :raises ValueError: naming the field that is wrong.
        """
        if not isinstance(self.client_id, str) or not _CLIENT_ID.fullmatch(self.client_id):
            raise ValueError("client_id must be 1-255 visible ASCII characters")
        if ":" in self.client_id:
            raise ValueError("client_id may not contain ':' (HTTP Basic would split it)")
        if self.token_endpoint_auth_method not in AUTH_METHODS:
            raise ValueError(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
        if (self.secret_hash is None) != (self.token_endpoint_auth_method == "none"):
            raise ValueError("confidential clients need a secret hash; public clients have none")
        unknown = set(self.grant_types) - set(GRANT_TYPES)
        if not self.grant_types or unknown:
            raise ValueError(f"grant_types must be a non-empty subset of {', '.join(GRANT_TYPES)}")
        if self.public and "client_credentials" in self.grant_types:
            raise ValueError("a public client cannot use client_credentials (it has no secret)")
        for uri in self.redirect_uris:
            _check_redirect_uri(uri)
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("authorization_code needs at least one redirect URI")
        if self.tenant is not None:
            check_identifier("tenant", self.tenant)
        for role in self.roles:
            check_identifier("each role", role)

    @property
    def public(self) -> bool:
        """``True`` for a public client (no secret; PKCE is its only proof)."""
        return self.token_endpoint_auth_method == "none"

    @property
    def scopes(self) -> frozenset[str]:
        """The scope-tokens the client may ask for."""
        return frozenset(self.scope.split())

    def check_secret(self, secret: object) -> bool:
        """``True`` when ``secret`` is this client's secret (constant-time, scrypt)."""
        return check_client_secret(secret, self.secret_hash)

    def with_secret(self, secret: str, *, cost: int = _SCRYPT_N) -> OAuthClient:
        """This registration with a new secret (rotation).

        :raises ValueError: the client is public, or the secret is unusable.
        """
        if self.public:
            raise ValueError("a public client has no secret")
        return replace(self, secret_hash=hash_client_secret(secret, cost=cost))


@runtime_checkable
class ClientRegistry(Protocol):
    """Where registered clients are looked up (one verb)."""

    def get(self, client_id: str) -> OAuthClient | None:
        """The client registered as ``client_id``, or ``None``."""
        ...


class MemoryClientRegistry:
    """A :class:`ClientRegistry` in memory (tests, clients fixed in code or config)."""

    def __init__(self, clients: Iterable[OAuthClient] = ()) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, OAuthClient] = {}
        for client in clients:
            self.add(client)

    def add(self, client: OAuthClient) -> None:
        """Register ``client``.

        :raises StorageError: a client with this id exists.
        """
        client.validate()
        with self._lock:
            if client.client_id in self._clients:
                raise StorageError(f"client {client.client_id!r} is registered already")
            self._clients[client.client_id] = client

    def put(self, client: OAuthClient) -> None:
        """Register or replace ``client`` (a secret rotation, a new redirect URI)."""
        client.validate()
        with self._lock:
            self._clients[client.client_id] = client

    def remove(self, client_id: str) -> bool:
        """Unregister a client; ``False`` when there was none."""
        with self._lock:
            return self._clients.pop(client_id, None) is not None

    def get(self, client_id: str) -> OAuthClient | None:
        """The client registered as ``client_id``, or ``None``."""
        return self._clients.get(client_id)
