"""The field cipher: one AES-256-GCM recipe per field, bound to its place.

::

    phone = cipher.field("customer", "phone")
    token = phone.encrypt_text("+8613800138000")
    phone.decrypt_text(token)                           # '+8613800138000'
    cipher.field("customer", "address").decrypt_text(token)  # DecryptionError, check "context"

A field's ciphertext is bound (by its associated data, see :mod:`riskguard.crypto._format`)
to its table and column and, when the field says so, to the row's primary key
(``per_row``) and to the data subject whose key encrypts it (``per_subject``). Keys come
from the :class:`~riskguard.crypto.Keyring`: ``field:<table>.<column>`` (or a named
keyset), or ``subject:<id>`` for per-subject fields.

Every decryption inside :meth:`FieldCipher.pii_reads` is remembered, and one ``pii.read``
audit event lists which fields of which records were read when the block ends.
"""

from __future__ import annotations

import contextvars
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag

from riskguard.crypto._format import (
    FORMAT_V1,
    HEADER_SIZE,
    MIN_SIZE,
    _lp,
    context_check,
    decode_text,
    encode_context,
    encode_text,
    parse,
)
from riskguard.crypto._keyring import DataKey, Keyring
from riskguard.errors import DecryptionError
from riskguard.types import AuditRecorder, ResourceRef

__all__ = ["FieldCipher", "FieldKey", "PiiReads"]

_IDS = struct.Struct(">II")
_MAX_IDS_PER_FIELD = 200


@dataclass
class PiiReads:
    """Which fields of which records were decrypted in one block (one request)."""

    fields: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, record: str | None) -> None:
        """Remember one decryption of ``name`` (``table.column``) for ``record``."""
        self.counts[name] = self.counts.get(name, 0) + 1
        if record is not None:
            self.fields.setdefault(name, set()).add(record)

    def details(self) -> dict[str, Any]:
        """The ``pii.read`` event's details: per field, the count and up to 200 record ids."""
        out: dict[str, Any] = {}
        for name in sorted(self.counts):
            ids = sorted(self.fields.get(name, ()))
            entry: dict[str, Any] = {"count": self.counts[name]}
            if ids:
                entry["records"] = ids[:_MAX_IDS_PER_FIELD]
                if len(ids) > _MAX_IDS_PER_FIELD:
                    entry["records_truncated"] = len(ids)
            out[name] = entry
        return {"fields": out}


class FieldKey:
    """Encrypts and decrypts one field (table, column). Made by :meth:`FieldCipher.field`."""

    __slots__ = (
        "_bound",
        "_check",
        "_ctx",
        "_dec",
        "_enc",
        "_keyring",
        "_prefix",
        "_reads",
        "column",
        "keyset",
        "name",
        "per_row",
        "per_subject",
        "table",
    )

    def __init__(
        self,
        keyring: Keyring,
        reads: contextvars.ContextVar[PiiReads | None],
        table: str,
        column: str,
        *,
        keyset: str | None,
        per_row: bool,
        per_subject: bool,
    ) -> None:
        self._keyring = keyring
        self._reads = reads
        self.table = table
        self.column = column
        self.name = f"{table}.{column}"
        self.keyset = keyset or f"field:{self.name}"
        self.per_row = per_row
        self.per_subject = per_subject
        self._bound = per_row or per_subject
        # The context of a field bound to neither row nor subject never changes.
        self._ctx = encode_context(table, column)
        self._check = context_check(self._ctx)
        # Label, table and column, length-prefixed: the part of every context that is fixed.
        self._prefix = self._ctx[:-4]
        # Fast paths for unbound fields (the keyring stays the authority: both copies die
        # with its cache TTL and whenever it changes keys in this process):
        # _enc = (expires, generation, aead, header bytes 0..13)
        # _dec = {header bytes 0..13: (expires, generation, aead)}
        self._enc: tuple[float, int, Any, bytes] | None = None
        self._dec: dict[bytes, tuple[float, int, Any]] = {}

    def _context(self, row: str | None, subject: str | None) -> bytes:
        if self.per_row and not row:
            raise DecryptionError(
                f"{self.name} is bound to its row: the row id is needed", check="context"
            )
        if self.per_subject and not subject:
            raise DecryptionError(
                f"{self.name} is encrypted per subject: the subject id is needed",
                check="context",
            )
        return (
            self._prefix
            + _lp(row if self.per_row and row else "")
            + _lp(subject if self.per_subject and subject else "")
        )

    def _primary(self, subject: str | None) -> Any:
        if self.per_subject:
            if not subject:
                self._context(None, None)  # raises the missing-subject error
            return self._keyring.subject_key(subject)  # type: ignore[arg-type]
        return self._keyring.primary(self.keyset)

    def encrypt(
        self, plaintext: bytes, *, row: str | None = None, subject: str | None = None
    ) -> bytes:
        """The binary ciphertext of ``plaintext`` under the field's primary key.

        :raises ShreddedError: ``per_subject`` and the subject was shredded.
        :raises DecryptionError: ``check="context"``: a required row or subject id is missing.
        """
        if not self._bound:
            enc = self._enc
            kr = self._keyring
            if enc is None or enc[0] <= kr._clock() or enc[1] != kr.generation:
                expires, key = kr.primary_entry(self.keyset)
                enc = self._enc = (expires, kr.generation, key.aead, key.prefix + self._check)
            nonce = os.urandom(12)
            header = enc[3] + nonce
            return header + enc[2].encrypt(nonce, plaintext, header + self._ctx)
        key = self._primary(subject)
        ctx = self._context(row, subject)
        return self._seal(key, ctx, context_check(ctx), plaintext)

    @staticmethod
    def _seal(key: DataKey, ctx: bytes, check: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        header: bytes = key.prefix + check + nonce
        sealed: bytes = key.aead.encrypt(nonce, plaintext, header + ctx)
        return header + sealed

    def decrypt(self, data: bytes, *, row: str | None = None, subject: str | None = None) -> bytes:
        """The plaintext of a binary ciphertext written by :meth:`encrypt` for this place.

        :raises DecryptionError: ``check`` names what failed — ``format`` (truncated or not a
            ciphertext), ``version`` (unknown format), ``key`` (unknown, retired or
            destroyed key), ``context`` (written for another table, column, row or
            subject), ``tag`` (modified).
        :raises ShreddedError: the subject's key was destroyed.
        """
        if not self._bound and len(data) >= MIN_SIZE:
            hit = self._dec.get(data[:13])
            kr = self._keyring
            if hit is not None and hit[0] > kr._clock() and hit[1] == kr.generation:
                try:
                    plaintext: bytes = hit[2].decrypt(
                        data[13:HEADER_SIZE], data[HEADER_SIZE:], data[:HEADER_SIZE] + self._ctx
                    )
                except InvalidTag:
                    raise self._tag_error() from None
                reads = self._reads.get()
                if reads is not None:
                    reads.add(self.name, None)
                return plaintext
        plaintext, _ctx = self._open(data, row, subject)
        return plaintext

    def _open(self, data: bytes, row: str | None, subject: str | None) -> tuple[bytes, bytes]:
        """Decrypt with every check; returns the plaintext and the context it was bound to."""
        if len(data) < MIN_SIZE or data[0] != FORMAT_V1:
            parse(data)  # raises the precise format/version error
        keyset_id, version = _IDS.unpack_from(data, 1)
        kr = self._keyring
        expires, key = kr.key_entry(keyset_id, version)
        if self._bound:
            ctx = self._context(row, subject)
            check = context_check(ctx)
        else:
            ctx, check = self._ctx, self._check
        if data[9:13] != check or (self.per_subject and key.subject != subject):
            raise DecryptionError(
                f"the value was not written for {self.name}"
                + (" of this row" if self.per_row else "")
                + (" and subject" if self.per_subject else "")
                + ": it was copied from another place",
                check="context",
            )
        try:
            plaintext = key.aead.decrypt(
                data[13:HEADER_SIZE], data[HEADER_SIZE:], data[:HEADER_SIZE] + ctx
            )
        except InvalidTag:
            raise self._tag_error() from None
        if not self._bound:
            if len(self._dec) > 64:
                self._dec.clear()
            self._dec[data[:13]] = (expires, kr.generation, key.aead)
        reads = self._reads.get()
        if reads is not None:
            reads.add(self.name, row if self.per_row else subject)
        return plaintext, ctx

    def _tag_error(self) -> DecryptionError:
        return DecryptionError(
            f"the ciphertext in {self.name} was modified (authentication tag mismatch)",
            check="tag",
        )

    def reencrypt(
        self, data: bytes, *, row: str | None = None, subject: str | None = None
    ) -> bytes:
        """Decrypt (every check) and encrypt again under the primary key, binding the same
        place; what a rewrap does to each row (the context is built once).

        :raises DecryptionError: as :meth:`decrypt`.
        """
        plaintext, ctx = self._open(data, row, subject)
        check = self._check if not self._bound else context_check(ctx)
        return self._seal(self._primary(subject), ctx, check, plaintext)

    def encrypt_text(
        self, value: str, *, row: str | None = None, subject: str | None = None
    ) -> str:
        """:meth:`encrypt` of UTF-8 text, as unpadded base64url."""
        return encode_text(self.encrypt(value.encode("utf-8"), row=row, subject=subject))

    def decrypt_text(
        self, token: str, *, row: str | None = None, subject: str | None = None
    ) -> str:
        """:meth:`decrypt` of a base64url ciphertext to text."""
        return self.decrypt(decode_text(token), row=row, subject=subject).decode("utf-8")

    def key_of(self, data: bytes) -> tuple[int, int]:
        """The (keyset id, version) a binary ciphertext names (for rewrap reports)."""
        env = parse(data)
        return env.keyset_id, env.version


class FieldCipher:
    """Field keys over one :class:`Keyring`, and ``pii.read`` auditing.

    :param keyring: where data keys come from.
    :param audit: where ``pii.read`` events go.
    """

    def __init__(self, keyring: Keyring, *, audit: AuditRecorder | None = None) -> None:
        self.keyring = keyring
        self.audit = audit
        self._reads: contextvars.ContextVar[PiiReads | None] = contextvars.ContextVar(
            f"riskguard_pii_reads_{id(self)}", default=None
        )
        self._fields: dict[tuple[str, str, str | None, bool, bool], FieldKey] = {}

    def field(
        self,
        table: str,
        column: str,
        *,
        keyset: str | None = None,
        per_row: bool = False,
        per_subject: bool = False,
    ) -> FieldKey:
        """The cipher of one field (made once, then reused)."""
        if not table or not column:
            raise ValueError("a field needs a table and a column name")
        k = (table, column, keyset, per_row, per_subject)
        fk = self._fields.get(k)
        if fk is None:
            fk = FieldKey(
                self.keyring, self._reads, table, column,
                keyset=keyset, per_row=per_row, per_subject=per_subject,
            )  # fmt: skip
            self._fields[k] = fk
        return fk

    @contextmanager
    def pii_reads(self) -> Iterator[PiiReads]:
        """Collect the decryptions in this block (this task or thread) and record them as
        one ``pii.read`` event when it ends (none when nothing was read). Nested blocks
        join the outer one."""
        outer = self._reads.get()
        if outer is not None:
            yield outer
            return
        reads = PiiReads()
        token = self._reads.set(reads)
        try:
            yield reads
        finally:
            self._reads.reset(token)
            if reads.counts and self.audit is not None:
                self.audit.record(
                    "pii.read",
                    "success",
                    resource=ResourceRef("pii"),
                    details=reads.details(),
                )
