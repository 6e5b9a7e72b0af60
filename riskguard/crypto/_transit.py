"""KEKs in a KMS or HashiCorp Vault Transit.

:class:`TransitClient` is the seam: a Protocol for a service that keeps versioned keys and
encrypts small blobs (:class:`TransitKeyVersions` is its answer about one key's versions).
:class:`TransitKeyProvider` is the :class:`~riskguard.crypto.KeyProvider` on top of any
client; :class:`VaultTransitClient` is an example client for Vault or OpenBao over HTTP.

Wrapped keys use scheme 0x02 of the wrapped-key format (:mod:`._kek`): the Transit
ciphertext of ``SHA-256(AAD) || key``, with KEK ids ``"<key name>:v<N>"``. Transit trims key
versions from the low end only, so its KEKs are destroyed in ascending order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from loguru import logger

from riskguard.crypto._kek import (
    _SCHEME_TRANSIT,
    _WRAP_LABEL,
    KekDestroyed,
    KekInfo,
    KekState,
    TransitError,
    WrappedKeyError,
    _bad_blob,
    _check_inputs,
    _check_purpose,
    _header,
    _parse_blob,
)
from riskguard.errors import KeyManagementError

if TYPE_CHECKING:
    import httpx

__all__ = ["TransitClient", "TransitKeyProvider", "TransitKeyVersions", "VaultTransitClient"]

_log = logger.bind(component="crypto")


@dataclass(frozen=True, slots=True)
class TransitKeyVersions:
    """The versions of one Transit key (Vault's ``GET <mount>/keys/<name>``).

    Versions below ``min_available`` were trimmed (destroyed); ``0`` means none were.
    """

    latest: int
    min_available: int = 0
    min_decryption: int = 1
    created: Mapping[int, datetime] = field(default_factory=dict)


@runtime_checkable
class TransitClient(Protocol):
    """A KMS that keeps versioned keys and encrypts small blobs, modelled on Vault Transit.

    Implementations raise :class:`TransitError` for refusals and transport failures, must
    be thread-safe, and never put plaintext in their messages.
    """

    def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
        """Encrypt under the latest version; returns ``"vault:v<N>:<base64>"``. ``context``
        must be bound (Vault: ``associated_data``) where the service supports it."""
        ...

    def decrypt(self, key_name: str, ciphertext: str, context: bytes) -> bytes:
        """The plaintext of ``ciphertext`` (the same ``context`` as at encryption)."""
        ...

    def rotate(self, key_name: str) -> int:
        """Make a new latest version; returns its number."""
        ...

    def trim(self, key_name: str, min_available_version: int) -> None:
        """Permanently delete every version below ``min_available_version`` (Vault: raise
        ``min_decryption_version`` / ``min_encryption_version``, then ``trim``)."""
        ...

    def versions(self, key_name: str) -> TransitKeyVersions:
        """The key's version window."""
        ...


_VAULT_CT_RE = re.compile(r"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}")
_TRANSIT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_TRANSIT_KEK_RE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,99}):v([1-9][0-9]{0,9})")


class TransitKeyProvider:
    """KEKs in a KMS or HashiCorp Vault Transit: the documented seam.

    One Transit key per purpose (``key_names``); its versions are the KEKs, with ids
    ``"<key name>:v<N>"``. The latest version is primary, older available ones decrypt
    only, trimmed ones destroyed. Every wrap and unwrap is one KMS call, so the keyring
    above caches unwrapped data keys. Vault trims from the low end only, so
    :meth:`destroy` takes the oldest remaining version first.

    :param client: a :class:`TransitClient` (:class:`VaultTransitClient`, or a test double).
    :param key_names: purpose → Transit key name.
    :param name: the provider's name (default ``"transit:<data key name>"``).
    """

    def __init__(
        self,
        client: TransitClient,
        *,
        key_names: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        names = dict(
            key_names
            if key_names is not None
            else {"data": "riskguard-data", "subject": "riskguard-subject"}
        )
        if not names:
            raise KeyManagementError("key_names is empty: map at least 'data' to a key name")
        for purpose, key_name in names.items():
            _check_purpose(purpose)
            if not isinstance(key_name, str) or not _TRANSIT_NAME_RE.fullmatch(key_name):
                raise KeyManagementError(f"invalid Transit key name {key_name!r}")
        if len(set(names.values())) != len(names):
            raise KeyManagementError("each purpose needs its own Transit key name")
        self._client = client
        self._names = names
        self._purposes = {v: k for k, v in names.items()}
        first = names.get("data", next(iter(names.values())))
        self.name = name or f"transit:{first}"

    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the latest version of the purpose's Transit key.

        :raises KeyManagementError: no Transit key for ``purpose``.
        :raises TransitError: the service failed.
        """
        _check_inputs(key, context, purpose)
        key_name = self._key_name(purpose)
        aad = _WRAP_LABEL + _header(_SCHEME_TRANSIT, key_name, purpose) + bytes(context)
        ciphertext = self._client.encrypt(key_name, hashlib.sha256(aad).digest() + bytes(key), aad)
        match = _VAULT_CT_RE.fullmatch(ciphertext) if isinstance(ciphertext, str) else None
        if match is None:
            raise TransitError(
                f"the Transit service returned a malformed ciphertext for key {key_name!r}",
                key_id=key_name,
            )
        kek_id = f"{key_name}:v{match.group(1)}"
        return _header(_SCHEME_TRANSIT, kek_id, purpose) + ciphertext.encode("ascii")

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key in ``wrapped`` (one KMS ``decrypt``; one more, ``versions``, on failure).

        :raises KekDestroyed: its version was trimmed.
        :raises WrappedKeyError: ``format``, ``unknown_kek``, ``purpose`` or ``tag``.
        """
        _check_inputs(None, context)
        blob = _parse_blob(wrapped)
        if blob.scheme != _SCHEME_TRANSIT:
            raise _bad_blob("it was wrapped by a local KEK, not by Transit", key_id=blob.kek_id)
        match = _TRANSIT_KEK_RE.fullmatch(blob.kek_id)
        if match is None or match.group(1) not in self._purposes:
            raise _bad_blob(
                f"{self.name} has no Transit key for KEK {blob.kek_id}",
                check="unknown_kek",
                key_id=blob.kek_id,
            )
        key_name, version = match.group(1), int(match.group(2))
        if self._purposes[key_name] != blob.purpose:
            raise _bad_blob(
                f"the blob says purpose {blob.purpose!r} but {key_name!r} serves "
                f"{self._purposes[key_name]!r}",
                check="purpose",
                key_id=blob.kek_id,
            )
        text = blob.body.decode("ascii", errors="replace")
        found = _VAULT_CT_RE.fullmatch(text)
        if found is None or int(found.group(1)) != version:
            raise _bad_blob("the Transit ciphertext is malformed", key_id=blob.kek_id)
        aad = _WRAP_LABEL + _header(_SCHEME_TRANSIT, key_name, blob.purpose) + bytes(context)
        try:
            plaintext = self._client.decrypt(key_name, text, aad)
        except TransitError as exc:
            raise self._explain_failure(blob.kek_id, key_name, version) from exc
        digest = hashlib.sha256(aad).digest()
        if len(plaintext) <= len(digest) or not hmac.compare_digest(
            plaintext[: len(digest)], digest
        ):
            raise _tag_error(blob.kek_id)
        return plaintext[len(digest) :]

    def rotate(self, purpose: str = "data") -> str:
        """A new version of the purpose's Transit key; returns its KEK id."""
        _check_purpose(purpose)
        key_name = self._key_name(purpose)
        kek_id = f"{key_name}:v{int(self._client.rotate(key_name))}"
        _log.info("KEK rotated: {} is the primary {!r} KEK of {}", kek_id, purpose, self.name)
        return kek_id

    def destroy(self, kek_id: str) -> None:
        """Trim ``kek_id``'s version. Only the oldest remaining version can go (Vault trims
        from the low end); the latest (primary) never. Already trimmed: nothing happens.

        :raises KeyManagementError: unknown id, the primary, or older versions remain.
        """
        match = _TRANSIT_KEK_RE.fullmatch(kek_id) if isinstance(kek_id, str) else None
        if match is None or match.group(1) not in self._purposes:
            raise KeyManagementError(f"{self.name} has no KEK {kek_id}", key_id=kek_id)
        key_name, version = match.group(1), int(match.group(2))
        info = self._client.versions(key_name)
        oldest = max(info.min_available, 1)
        if version < oldest:
            return
        if version > info.latest:
            raise KeyManagementError(f"{self.name} has no KEK {kek_id}", key_id=kek_id)
        if version == info.latest:
            purpose = self._purposes[key_name]
            raise KeyManagementError(
                f"refusing to destroy {kek_id}: it is the primary {purpose!r} KEK",
                key_id=kek_id,
                hint=f"rotate({purpose!r}) first, rewrap what it wraps, then destroy",
            )
        if version > oldest:
            raise KeyManagementError(
                f"cannot destroy {kek_id} alone: Transit trims from the oldest version, and "
                f"{key_name}:v{oldest} is still available",
                key_id=kek_id,
                hint="rewrap what the older versions wrap, then destroy them in ascending order",
            )
        self._client.trim(key_name, version + 1)
        _log.info("KEK destroyed: {} of {}", kek_id, self.name)

    def keks(self) -> list[KekInfo]:
        """Every version of every purpose's key (one ``versions`` call per purpose)."""
        out: list[KekInfo] = []
        for purpose, key_name in self._names.items():
            info = self._client.versions(key_name)
            for v in range(1, info.latest + 1):
                state: KekState = (
                    "destroyed"
                    if v < info.min_available
                    else "primary"
                    if v == info.latest
                    else "decrypt_only"
                )
                out.append(KekInfo(f"{key_name}:v{v}", purpose, state, info.created.get(v)))
        return out

    def _key_name(self, purpose: str) -> str:
        try:
            return self._names[purpose]
        except KeyError:
            raise KeyManagementError(
                f"{self.name} has no Transit key for purpose {purpose!r}",
                hint="add it to key_names",
            ) from None

    def _explain_failure(self, kek_id: str, key_name: str, version: int) -> KeyManagementError:
        try:
            info = self._client.versions(key_name)
        except TransitError:
            info = None
        if info is not None and version < info.min_available:
            return KekDestroyed(
                f"the key-encryption key {kek_id} was destroyed (trimmed): "
                "the keys wrapped under it cannot be recovered",
                key_id=kek_id,
            )
        if info is not None and version > info.latest:
            return _bad_blob(
                f"the Transit key has no version {version}", check="unknown_kek", key_id=kek_id
            )
        return _tag_error(kek_id)


def _tag_error(kek_id: str) -> WrappedKeyError:
    return WrappedKeyError(
        f"the wrapped key does not authenticate under KEK {kek_id}: the context differs "
        "(the blob belongs to another key row) or the blob was modified",
        check="tag",
        key_id=kek_id,
    )


class VaultTransitClient:
    """A :class:`TransitClient` for HashiCorp Vault (or OpenBao) Transit over HTTP, on
    ``httpx`` (the optional extra ``riskguard[vault]``). An example adapter: small,
    synchronous, one request per call.

    ==========  ==================================================================
    encrypt     ``POST /v1/<mount>/encrypt/<name>`` ``{"plaintext", "associated_data"}``
    decrypt     ``POST /v1/<mount>/decrypt/<name>`` ``{"ciphertext", "associated_data"}``
    rotate      ``POST /v1/<mount>/keys/<name>/rotate`` (then ``GET`` if the answer is 204)
    trim        ``POST …/keys/<name>/config`` ``{"min_decryption_version",
                "min_encryption_version"}`` then ``POST …/keys/<name>/trim``
                ``{"min_available_version"}``
    versions    ``GET /v1/<mount>/keys/<name>``
    ==========  ==================================================================

    Binding: ``associated_data`` needs Vault 1.13+ and an AEAD key type (``aes256-gcm96``,
    the default); ``binding="context"`` sends ``context`` instead, for keys created with
    ``derived=true``; ``"none"`` sends neither (the provider's own check still binds).
    The token's policy needs ``update`` on ``encrypt/<name>``, ``decrypt/<name>``,
    ``keys/<name>/rotate``, ``keys/<name>/config`` and ``keys/<name>/trim``, and ``read``
    on ``keys/<name>`` (trimming needs no ``deletion_allowed``).

    :param http: an ``httpx.Client`` to use (tests pass one with a ``MockTransport``).
    :raises ImportError: httpx is not installed.
    """

    def __init__(
        self,
        url: str,
        token: str,
        mount: str = "transit",
        *,
        namespace: str | None = None,
        http: httpx.Client | None = None,
        timeout: float = 5.0,
        binding: Literal["associated_data", "context", "none"] = "associated_data",
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ImportError(
                "VaultTransitClient needs httpx: pip install 'riskguard[vault]'"
            ) from exc
        self._httpx = httpx
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._base = f"{url.rstrip('/')}/v1/{mount.strip('/')}"
        self._headers = {"X-Vault-Token": token}
        if namespace:
            self._headers["X-Vault-Namespace"] = namespace
        self._binding = binding

    def __repr__(self) -> str:
        return f"VaultTransitClient({self._base!r})"  # never the token

    def encrypt(self, key_name: str, plaintext: bytes, context: bytes) -> str:
        """``POST encrypt/<name>``; returns ``data.ciphertext``."""
        body = {"plaintext": base64.b64encode(plaintext).decode("ascii"), **self._bind(context)}
        data = self._call("POST", f"encrypt/{_q(key_name)}", "encrypt", key_name, body)
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str):
            raise TransitError("Vault's encrypt answer has no ciphertext", key_id=key_name)
        return ciphertext

    def decrypt(self, key_name: str, ciphertext: str, context: bytes) -> bytes:
        """``POST decrypt/<name>``; returns the decoded ``data.plaintext``."""
        body = {"ciphertext": ciphertext, **self._bind(context)}
        data = self._call("POST", f"decrypt/{_q(key_name)}", "decrypt", key_name, body)
        try:
            return base64.b64decode(data["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise TransitError("Vault's decrypt answer is malformed", key_id=key_name) from None

    def rotate(self, key_name: str) -> int:
        """``POST keys/<name>/rotate``; the new ``latest_version``."""
        data = self._call("POST", f"keys/{_q(key_name)}/rotate", "rotate", key_name, {})
        latest = data.get("latest_version")
        return latest if isinstance(latest, int) else self.versions(key_name).latest

    def trim(self, key_name: str, min_available_version: int) -> None:
        """Raise the minimum versions (never lowering them), then trim."""
        current = self._call("GET", f"keys/{_q(key_name)}", "read", key_name)
        config = {
            "min_decryption_version": max(
                int(current.get("min_decryption_version") or 0), min_available_version
            ),
            "min_encryption_version": max(
                int(current.get("min_encryption_version") or 0), min_available_version
            ),
        }
        self._call("POST", f"keys/{_q(key_name)}/config", "config", key_name, config)
        body = {"min_available_version": min_available_version}
        self._call("POST", f"keys/{_q(key_name)}/trim", "trim", key_name, body)

    def versions(self, key_name: str) -> TransitKeyVersions:
        """``GET keys/<name>``: ``latest_version``, ``min_available_version``, ``keys``."""
        data = self._call("GET", f"keys/{_q(key_name)}", "read", key_name)
        try:
            created = {int(v): _vault_time(t) for v, t in dict(data.get("keys") or {}).items()}
            return TransitKeyVersions(
                latest=int(data["latest_version"]),
                min_available=int(data.get("min_available_version") or 0),
                min_decryption=int(data.get("min_decryption_version") or 1),
                created=created,
            )
        except (KeyError, TypeError, ValueError):
            raise TransitError("Vault's key answer is malformed", key_id=key_name) from None

    def _bind(self, context: bytes) -> dict[str, str]:
        if self._binding == "none":
            return {}
        return {self._binding: base64.b64encode(context).decode("ascii")}

    def _call(
        self,
        method: str,
        path: str,
        op: str,
        key_name: str,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.request(
                method, f"{self._base}/{path}", json=body, headers=self._headers
            )
        except self._httpx.HTTPError as exc:
            raise TransitError(
                f"cannot reach Vault for {op} on key {key_name!r}: {type(exc).__name__}",
                key_id=key_name,
                hint=f"check the Vault address {self._base} and the network",
            ) from exc
        if response.status_code == 204:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            detail = "; ".join(str(e) for e in errors)[:300] if errors else response.reason_phrase
            raise TransitError(
                f"Vault Transit {op} on key {key_name!r} failed: HTTP {response.status_code}: "
                f"{detail}",
                key_id=key_name,
            )
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise TransitError(f"Vault's {op} answer has no data", key_id=key_name)
        return data


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _vault_time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, dict):
        value = value.get("creation_time")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
