"""FieldCrypto: the keyring, the field cipher and the blind indexes, as one object.

``Guard.crypto`` is one of these. Encrypted column types reach it (directly or through a
factory) for their field cipher and blind indexes; the tables they live in are the
application's, so :meth:`FieldCrypto.shred` and ``riskguard keys rewrap`` are given them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from riskguard.crypto._blind import BlindIndex, derive_index_key
from riskguard.crypto._cipher import FieldCipher, PiiReads
from riskguard.crypto._keyring import Keyring, ShredReport
from riskguard.db import map_errors
from riskguard.errors import ConfigError, DecryptionError
from riskguard.types import AuditRecorder

if TYPE_CHECKING:
    from riskguard.crypto._sqla import BlindIndexSpec, _Encrypted

__all__ = ["INDEX_KEYSET", "FieldCrypto", "SubjectErasure", "blind_spec"]

#: The keyset whose versions are the roots the blind-index keys are derived from.
INDEX_KEYSET = "index:blind"


@dataclass(frozen=True, slots=True)
class SubjectErasure:
    """What :meth:`FieldCrypto.shred` did: the key report and the blind indexes nulled
    (``table.column`` → rows)."""

    key: ShredReport
    indexes_cleared: dict[str, int]


class FieldCrypto:
    """Field encryption for an application: keys, cipher, blind indexes, shredding.

    :param keyring: data keys (see :class:`Keyring`).
    :param audit: where ``pii.read`` and ``key.*`` events go (default: the keyring's).
    :param region: the default region for phone numbers in blind indexes.
    """

    def __init__(
        self, keyring: Keyring, *, audit: AuditRecorder | None = None, region: str = "CN"
    ) -> None:
        self.keyring = keyring
        self.audit = audit if audit is not None else keyring.audit
        self.cipher = FieldCipher(keyring, audit=self.audit)
        self.region = region
        self._indexes: dict[tuple[str, str, str, int], BlindIndex] = {}
        self._index_versions_cache: tuple[float, int, list[int]] | None = None

    # -- fields --------------------------------------------------------------------------

    def field(
        self,
        table: str,
        column: str,
        *,
        keyset: str | None = None,
        per_row: bool = False,
        per_subject: bool = False,
    ) -> Any:
        """The cipher of one field (see :meth:`FieldCipher.field`)."""
        return self.cipher.field(
            table, column, keyset=keyset, per_row=per_row, per_subject=per_subject
        )

    def pii_reads(self) -> AbstractContextManager[PiiReads]:
        """One ``pii.read`` event for the decryptions in this block (a request); see
        :meth:`FieldCipher.pii_reads`."""
        return self.cipher.pii_reads()

    # -- blind indexes -------------------------------------------------------------------

    def index(self, table: str, column: str, name: str, normaliser: str, bits: int,
              *, version: int | None = None) -> BlindIndex:  # fmt: skip
        """The blind index ``name`` of ``table.column`` under the index root ``version``
        (default: the current primary).

        :raises ConfigError: bad ``bits`` or unknown ``normaliser``.
        """
        if version is None:
            root = self.keyring.primary(INDEX_KEYSET, kind="index")
        else:
            ks = self.keyring.primary(INDEX_KEYSET, kind="index")
            root = self.keyring.key(ks.keyset_id, version)
        k = (table, column, name, root.version)
        bi = self._indexes.get(k)
        if bi is None:
            assert root.material is not None
            key = derive_index_key(
                root.material, table=table, column=column, index=name, version=root.version
            )
            bi = BlindIndex(key, name=name, normaliser=normaliser, bits=bits, region=self.region)
            self._indexes[k] = bi
        return bi

    def _index_versions(self) -> list[int]:
        """The primary index root version, then the older ones still usable (searches
        match values under each while a rebuild runs); cached like the keys."""
        kr = self.keyring
        cached = self._index_versions_cache
        if cached is not None and cached[0] > kr._clock() and cached[1] == kr.generation:
            return cached[2]
        expires, primary = kr.primary_entry(INDEX_KEYSET, kind="index")
        info = kr.describe(INDEX_KEYSET)
        others = [
            v.version for v in info.versions
            if v.state == "decrypt_only" and v.version >= info.min_decryption_version
        ]  # fmt: skip
        versions = [primary.version, *others]
        self._index_versions_cache = (expires, kr.generation, versions)
        return versions

    def blind_value(self, column_type: _Encrypted, value: str) -> str:
        """The blind index value of ``value`` for an encrypted column (current root).

        :raises InvalidValue: the value does not normalise.
        """
        spec = blind_spec(column_type)
        assert column_type.table is not None and column_type.column is not None
        bi = self.index(column_type.table, column_type.column, spec.index_name,
                        spec.normaliser, spec.bits)  # fmt: skip
        return bi.compute(value)

    def blind_clause(
        self, column_type: _Encrypted, expr: Any, value: str
    ) -> sa.ColumnElement[bool]:
        """``index_column IN (values under every usable index root)`` for ``value``."""
        spec = blind_spec(column_type)
        assert column_type.table is not None and column_type.column is not None
        idx_col = expr.table.c[spec.column]
        values = []
        for v in self._index_versions():
            try:
                bi = self.index(column_type.table, column_type.column, spec.index_name,
                                spec.normaliser, spec.bits, version=v)  # fmt: skip
            except DecryptionError:
                continue  # a root retired meanwhile (another process): nothing indexed by it
            values.append(bi.compute(value))
        clause: sa.ColumnElement[bool] = (
            idx_col == values[0] if len(values) == 1 else idx_col.in_(values)
        )
        return clause

    # -- Core helpers --------------------------------------------------------------------

    def prepare(self, table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """Core writes: encrypt (and index) the encrypted columns of one row's values."""
        from riskguard.crypto._sqla import prepare_values

        return prepare_values(table, values)

    def reveal(self, table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
        """Core reads: open the row- and subject-bound columns of a result row."""
        from riskguard.crypto._sqla import reveal_values

        return reveal_values(table, row)

    # -- erasure -------------------------------------------------------------------------

    def shred(
        self,
        subject: str,
        *,
        tables: list[sa.Table] | None = None,
        engine: Engine | None = None,
        protect_backups: bool = True,
    ) -> SubjectErasure:
        """Crypto-shred a data subject: destroy their key (:meth:`Keyring.shred`, audited
        as ``key.shred``), then null their blind indexes in every per-subject encrypted
        column of ``tables``. The key goes first: from then on no process can write new
        values (or index entries) for the subject, so the nulling leaves none behind.

        :param tables: the application's tables that hold per-subject encrypted columns.
        :param engine: the application's database (default: riskguard's).
        """
        return self.shred_many([subject], tables=tables, engine=engine,
                               protect_backups=protect_backups)[0]  # fmt: skip

    def shred_many(
        self,
        subjects: list[str],
        *,
        tables: list[sa.Table] | None = None,
        engine: Engine | None = None,
        protect_backups: bool = True,
    ) -> list[SubjectErasure]:
        """:meth:`shred` for a batch of erasure requests, with one subject-KEK rotation."""
        eng = engine if engine is not None else self.keyring.engine
        columns = self._subject_columns(tables)
        cleared: dict[str, dict[str, int]] = {s: {} for s in subjects}

        def clear_indexes() -> None:
            for t, col_type in columns:
                spec = col_type.blind_index
                assert spec is not None and col_type.subject is not None
                for subject in subjects:
                    with map_errors(eng, "clearing a subject's blind indexes"), eng.begin() as c:
                        n = c.execute(
                            t.update()
                            .where(t.c[col_type.subject] == subject)
                            .values({spec.column: None})
                        ).rowcount
                    cleared[subject][f"{t.name}.{spec.column}"] = n

        reports = self.keyring.shred_many(
            subjects, protect_backups=protect_backups, after_destroy=clear_indexes
        )
        return [SubjectErasure(r, cleared[r.subject]) for r in reports]

    def _subject_columns(self, tables: list[sa.Table] | None) -> list[tuple[sa.Table, _Encrypted]]:
        from riskguard.crypto._sqla import _Encrypted

        out: list[tuple[sa.Table, _Encrypted]] = []
        if tables is None:
            raise ConfigError(
                "shred() needs the tables holding the subject's encrypted columns",
                hint="pass tables=[Customer.__table__, ...] (or use `riskguard keys shred "
                "--models`)",
            )
        for t in tables:
            for col in t.columns:
                ct = col.type
                if isinstance(ct, _Encrypted) and ct.subject is not None and ct.blind_index:
                    out.append((t, ct))
        return out


def blind_spec(column_type: _Encrypted) -> BlindIndexSpec:
    spec = column_type.blind_index
    if spec is None:
        raise ConfigError(
            f"{column_type.table}.{column_type.column} has no blind index",
            hint="declare blind_index=BlindIndexSpec(...) on the column type",
        )
    return spec
