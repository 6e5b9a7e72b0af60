"""One KEK from an environment variable: :class:`EnvKeyProvider`.

The current KEK is ``$RISKGUARD_KEK`` (base64url, 32 bytes); older ones, comma-separated in
``$RISKGUARD_KEK_PREVIOUS``, decrypt only. It serves every purpose (purpose ``"*"``), wraps
with scheme 0x01 of the wrapped-key format (:mod:`._kek`) through the local-KEK pieces of
:mod:`._local`, and its KEK ids are fingerprints of the material, so they survive restarts.
It cannot destroy anything (the key lives in your deployment's secrets), so
crypto-shredding against old backups is not available with it.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Mapping

from riskguard.crypto._kek import (
    _KEK_BYTES,
    _NONCE_BYTES,
    _SCHEME_LOCAL,
    _WRAP_LABEL,
    KekInfo,
    _b64d,
    _bad_blob,
    _check_inputs,
    _fingerprint_id,
    _header,
    _parse_blob,
)
from riskguard.crypto._local import _ANY_PURPOSE, _Kek, _open_local
from riskguard.errors import KeyManagementError

__all__ = ["EnvKeyProvider"]


def _decode_env_kek(value: str, var: str, position: str = "") -> bytes:
    try:
        material = _b64d(value)
    except (ValueError, binascii.Error):
        raise KeyManagementError(
            f"the environment variable {var}{position} is not valid base64url",
            hint=_ENV_HINT,
        ) from None
    if len(material) != _KEK_BYTES:
        raise KeyManagementError(
            f"the environment variable {var}{position} must hold 32 bytes, not {len(material)}",
            hint=_ENV_HINT,
        )
    return material


_ENV_HINT = (
    'make one with: python -c "import base64, os; '
    'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)


class EnvKeyProvider:
    """One KEK, for every purpose, from an environment variable (base64url, 32 bytes).

    Rotation is a deployment change: set a new ``RISKGUARD_KEK`` and move the old value to
    ``RISKGUARD_KEK_PREVIOUS`` (comma-separated, decrypt only), then rewrap. KEK ids are
    fingerprints, so they survive restarts. :meth:`rotate` and :meth:`destroy` refuse, and
    crypto-shredding against old backups is NOT available: the KEK lives on in your
    deployment's secret history.

    :raises KeyManagementError: unset, not base64url or not 32 bytes, naming the variable
        (never its value).
    """

    def __init__(
        self,
        var: str = "RISKGUARD_KEK",
        previous_var: str = "RISKGUARD_KEK_PREVIOUS",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(var, "").strip()
        if not raw:
            raise KeyManagementError(f"the environment variable {var} is not set", hint=_ENV_HINT)
        self.name = f"env:{var}"
        self._var = var
        current = _decode_env_kek(raw, var)
        primary_id = _fingerprint_id(current)
        self._keks: dict[str, _Kek] = {
            primary_id: _Kek(primary_id, _ANY_PURPOSE, "primary", None, current)
        }
        parts = [p.strip() for p in env.get(previous_var, "").split(",")]
        for index, part in enumerate(p for p in parts if p):
            material = _decode_env_kek(part, previous_var, f" (item {index + 1})")
            kek_id = _fingerprint_id(material)
            self._keks.setdefault(
                kek_id, _Kek(kek_id, _ANY_PURPOSE, "decrypt_only", None, material)
            )
        self._primary = self._keks[primary_id]

    def wrap(self, key: bytes, *, context: bytes, purpose: str = "data") -> bytes:
        """Wrap ``key`` under the current KEK; ``purpose`` is recorded and authenticated."""
        _check_inputs(key, context, purpose)
        header = _header(_SCHEME_LOCAL, self._primary.id, purpose)
        nonce = os.urandom(_NONCE_BYTES)
        aad = _WRAP_LABEL + header + bytes(context)
        return header + nonce + self._primary.aead().encrypt(nonce, bytes(key), aad)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key in ``wrapped``, under the current or a previous KEK.

        :raises WrappedKeyError: ``format``, ``unknown_kek`` (a KEK no longer configured)
            or ``tag``.
        """
        _check_inputs(None, context)
        blob = _parse_blob(wrapped)
        if blob.scheme != _SCHEME_LOCAL:
            raise _bad_blob("it was wrapped by a Transit provider", key_id=blob.kek_id)
        kek = self._keks.get(blob.kek_id)
        if kek is None:
            raise _bad_blob(
                f"neither {self._var} nor its previous keys hold KEK {blob.kek_id}",
                check="unknown_kek",
                key_id=blob.kek_id,
            )
        return _open_local(blob, kek, context)

    def rotate(self, purpose: str = "data") -> str:
        """Refused: rotate by changing the environment (see the class docstring)."""
        raise KeyManagementError(
            f"{self.name} cannot rotate: its KEK comes from the environment",
            key_id=self._primary.id,
            hint=f"set a new {self._var} and move the old value into the previous-keys "
            "variable (comma-separated), restart, then rewrap the data keys",
        )

    def destroy(self, kek_id: str) -> None:
        """Refused: remove the key from the environment (and its secret history) instead."""
        raise KeyManagementError(
            f"{self.name} cannot destroy KEKs; crypto-shredding against old backups "
            "needs a file or Transit provider",
            key_id=kek_id,
            hint="remove the value from the previous-keys variable and from your secret "
            "store's history",
        )

    def keks(self) -> list[KekInfo]:
        """The current KEK (primary) and the previous ones (decrypt only), purpose ``*``."""
        return [k.info() for k in self._keks.values()]
