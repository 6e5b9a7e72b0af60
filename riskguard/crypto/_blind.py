"""Blind indexes: a truncated keyed hash of a normalised value, stored beside its ciphertext
so that equality searches work without decrypting.

**Index keys.** :func:`derive_index_key` derives one 32-byte key per (table, column, index,
version) from a root key with HKDF-SHA256 (RFC 5869), no salt (the root is already uniformly
random; RFC 5869 §3.1), and this ``info``::

    b"riskguard/blind-index-key"                        25 bytes, fixed label
    u32be(len(table))  || table                         UTF-8
    u32be(len(column)) || column                        UTF-8
    u32be(len(index))  || index                         UTF-8
    u32be(version)

(``u32be`` is a 4-byte big-endian unsigned integer; lengths count UTF-8 bytes.) Every field is
length-prefixed, so no two (table, column, index, version) give the same ``info``. Rotating an
index key means deriving ``version + 1`` and recomputing every row's index under it.

**Index values.** The index is the first ``ceil(bits / 4)`` lower-case hex characters of
``HMAC-SHA256(index_key, message)`` with every bit after the first ``bits`` cleared (so when
``bits`` is not a multiple of 4 the last character's low ``4 * ceil(bits / 4) - bits`` bits are
zero): the top ``bits`` bits, left-aligned, as CipherSweet truncates. Equivalently, as an
integer: ``(mac_int >> (256 - bits)) << (4 * ceil(bits / 4) - bits)``, zero-padded to
``ceil(bits / 4)`` hex digits. Store it in a ``String(ceil(bits / 4))`` column
(:attr:`BlindIndex.hex_chars`). The message is the UTF-8 normalised value for
:class:`BlindIndex`, and for :class:`CompoundIndex` each transformed part as
``u32be(len(part)) || part`` in the order the parts were declared.
``tests/vectors/blind_index.json`` holds test vectors.

Choose ``bits`` with :func:`riskguard.crypto._planner.plan_bits`: too many bits and the index
identifies rows, too few and every search returns half the table.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from riskguard.crypto._normalise import Normaliser, get_normaliser
from riskguard.errors import ConfigError, InvalidValue, KeyManagementError

__all__ = ["INFO_LABEL", "BlindIndex", "CompoundIndex", "derive_index_key"]

#: The fixed first bytes of every index key's HKDF ``info``.
INFO_LABEL: Final = b"riskguard/blind-index-key"

_KEY_BYTES: Final = 32
_MIN_KEY_BYTES: Final = 32
_MAX_VERSION: Final = 2**32 - 1
_digest: Final = hmac.digest


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _name(what: str, value: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the blind index's {what} must be a non-empty str")
    return value.encode("utf-8")


def derive_index_key(
    root: bytes, *, table: str, column: str, index: str, version: int = 1
) -> bytes:
    """The 32-byte HMAC key of one blind index (layout of ``info`` in the module docstring).

    :param root: the blind-index root key (at least 32 random bytes).
    :param version: the index key's version, 1 to 2**32 - 1; bump it to rotate.
    :raises KeyManagementError: ``root`` is shorter than 32 bytes.
    :raises ConfigError: an empty name or a version out of range.
    """
    if not isinstance(root, bytes | bytearray) or len(root) < _MIN_KEY_BYTES:
        raise KeyManagementError(f"a blind-index root key needs at least {_MIN_KEY_BYTES} bytes")
    if type(version) is not int or not 1 <= version <= _MAX_VERSION:
        raise ConfigError(f"a blind-index key version is an int from 1 to {_MAX_VERSION}")
    info = b"".join(
        (
            INFO_LABEL,
            *(
                _u32(len(b)) + b
                for b in (_name("table", table), _name("column", column), _name("index", index))
            ),
            _u32(version),
        )
    )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info)
    return hkdf.derive(bytes(root))


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) < _MIN_KEY_BYTES:
        raise KeyManagementError(
            f"a blind-index key needs at least {_MIN_KEY_BYTES} bytes",
            hint="derive it with derive_index_key()",
        )
    return bytes(key)


class _Sized:
    """The truncation shared by both index kinds (see the module docstring)."""

    __slots__ = ("_last", "_nbytes", "bits", "hex_chars")

    def __init__(self, bits: int) -> None:
        if type(bits) is not int or not 1 <= bits <= 256:
            raise ConfigError(
                f"a blind index has 1 to 256 bits, not {bits!r}", hint="see plan_bits() for a size"
            )
        self.bits = bits
        #: The stored value's length: the column is ``String(hex_chars)``.
        self.hex_chars = -(-bits // 4)
        self._nbytes = -(-bits // 8)
        spare = 4 * self.hex_chars - bits
        keep = 0xF ^ ((1 << spare) - 1)
        # Last hex digit -> the digit with its spare low bits cleared (None: nothing to clear).
        self._last: dict[str, str] | None = (
            {c: format(int(c, 16) & keep, "x") for c in "0123456789abcdef"} if spare else None
        )

    def _hex(self, mac: bytes) -> str:
        h = mac[: self._nbytes].hex()
        last = self._last
        if last is None:
            return h[: self.hex_chars]
        n = self.hex_chars - 1
        return h[:n] + last[h[n]]


def _resolve(normaliser: Normaliser | str, region: str) -> Normaliser:
    if isinstance(normaliser, str):
        return get_normaliser(normaliser, region=region)
    if not callable(normaliser):
        raise ConfigError("a normaliser is a callable or a normaliser name")
    return normaliser


class BlindIndex(_Sized):
    """One blind index on one column: ``compute(value)`` normalises the value and returns its
    index (hex, :attr:`hex_chars` long).

    The key never appears in ``repr``. Instances are immutable and safe to share between
    threads.

    :param key: the index key, from :func:`derive_index_key`.
    :param name: the index's name (for messages and ``repr``).
    :param normaliser: a normaliser name (``phone``, ``cn_id``, ``address``, ``email``,
        ``exact``, ``lower``) or any ``str -> str`` callable.
    :param bits: the index size, 1 to 256.
    :param region: the phone normaliser's default region.
    :raises ConfigError: bad ``bits``, unknown normaliser or region.
    :raises KeyManagementError: a key shorter than 32 bytes.
    """

    __slots__ = ("_key", "_normalise", "name")

    def __init__(
        self,
        key: bytes,
        *,
        name: str,
        normaliser: Normaliser | str,
        bits: int,
        region: str = "CN",
    ) -> None:
        super().__init__(bits)
        self._key = _check_key(key)
        self.name = name
        self._normalise = _resolve(normaliser, region)

    def compute(self, value: str) -> str:
        """The index of ``value`` after normalisation.

        :raises InvalidValue: the normaliser rejects the value (the message never holds it).
        """
        h = _digest(self._key, self._normalise(value).encode(), "sha256")[: self._nbytes].hex()
        last = self._last
        if last is None:
            return h[: self.hex_chars]
        n = self.hex_chars - 1
        return h[:n] + last[h[n]]

    def compute_normalised(self, canonical: str) -> str:
        """The index of a value that is already in canonical form (skips the normaliser: the
        caller vouches for the form; a non-canonical value gets a different index)."""
        # _hex() inlined (here and in compute): the hot path, held to 0.7x a bare HMAC.
        h = _digest(self._key, canonical.encode(), "sha256")[: self._nbytes].hex()
        last = self._last
        if last is None:
            return h[: self.hex_chars]
        n = self.hex_chars - 1
        return h[:n] + last[h[n]]

    def __repr__(self) -> str:
        return f"BlindIndex(name={self.name!r}, bits={self.bits})"


class CompoundIndex(_Sized):
    """A blind index over several fields, each through its own transform: e.g. the last four
    digits of the phone and the normalised city::

        CompoundIndex(key, name="phone4_city", bits=22,
                      parts=[("phone", last_digits(4)), ("city", "address")])
        idx.compute(phone="+86 138-0013-8000", city="北京市")

    The HMAC covers ``u32be(len(part)) || part`` for each transformed part (UTF-8), in the
    order of ``parts``.

    :param parts: ``(field, transform)`` pairs; a transform is a normaliser name or a
        ``str -> str`` callable (:func:`last_digits`, :func:`first_chars`…).
    :raises ConfigError: no parts, a repeated or empty field name, bad ``bits``, unknown
        normaliser.
    :raises KeyManagementError: a key shorter than 32 bytes.
    """

    __slots__ = ("_key", "_parts", "fields", "name")

    def __init__(
        self,
        key: bytes,
        *,
        name: str,
        parts: Sequence[tuple[str, Normaliser | str]],
        bits: int,
        region: str = "CN",
    ) -> None:
        super().__init__(bits)
        self._key = _check_key(key)
        self.name = name
        if not parts:
            raise ConfigError(f"compound index {name!r} needs at least one part")
        resolved: list[tuple[str, Normaliser]] = []
        for part in parts:
            if not isinstance(part, tuple) or len(part) != 2:
                raise ConfigError(f"compound index {name!r}: a part is (field, transform)")
            field, transform = part
            if not isinstance(field, str) or not field:
                raise ConfigError(f"compound index {name!r}: a field name is a non-empty str")
            if any(field == f for f, _ in resolved):
                raise ConfigError(f"compound index {name!r} names field {field!r} twice")
            resolved.append((field, _resolve(transform, region)))
        self._parts = tuple(resolved)
        self.fields = tuple(f for f, _ in resolved)

    def compute(self, values: Mapping[str, str] | None = None, /, **kwargs: str) -> str:
        """The index of the fields' values, given as a mapping or as keywords.

        :raises InvalidValue: a field is missing (``check="missing"``), unknown
            (``check="unknown"``), or its transform rejects the value.
        """
        given: Mapping[str, str] = kwargs if values is None else {**values, **kwargs}
        if len(given) != len(self._parts) or any(f not in given for f in self.fields):
            missing = [f for f in self.fields if f not in given]
            if missing:
                raise InvalidValue(
                    f"compound index {self.name!r} needs a value for {missing[0]!r}",
                    kind="compound",
                    check="missing",
                )
            extra = sorted(set(given) - set(self.fields))
            raise InvalidValue(
                f"compound index {self.name!r} has no field {extra[0]!r}",
                kind="compound",
                check="unknown",
            )
        msg = bytearray()
        for field, transform in self._parts:
            b = transform(given[field]).encode()
            msg += len(b).to_bytes(4, "big")
            msg += b
        return self._hex(_digest(self._key, msg, "sha256"))

    def __repr__(self) -> str:
        return f"CompoundIndex(name={self.name!r}, fields={self.fields!r}, bits={self.bits})"
