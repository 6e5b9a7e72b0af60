"""SQLAlchemy column types for encrypted personal data, in Core and in the ORM.

::

    class Customer(Base):
        __tablename__ = "customer"
        id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
        phone: Mapped[str | None] = mapped_column(
            EncryptedString(guard.crypto, per_row=True, subject="id",
                            blind_index=BlindIndexSpec("phone_bidx", "phone", bits=18)))
        phone_bidx: Mapped[str | None] = mapped_column(String(5), index=True)

    session.scalars(select(Customer).where(Customer.phone.blind_eq("+86 138-0013-8000")))

A column type learns its table and column when the column is attached to its table, so the
ciphertext is bound to that place. Options:

- ``per_row``: the row's primary key is bound too (a value copied to another row fails).
  The ORM binds it at flush, so the key must be known before the INSERT (a client-side
  default such as a UUID or snowflake id; an autoincrement key is refused with a hint).
- ``subject="<attribute>"``: the value is encrypted under that data subject's key
  (crypto-shredding) and bound to the subject id.
- ``blind_index``: a companion column holding a keyed, truncated hash of the normalised
  value, filled in at flush and searched with ``Column.blind_eq(value)``. A blind index
  matches a few other rows on purpose (the planner's coincidences): compare the decrypted
  values to keep the exact ones.

In the ORM, values are decrypted when a row is loaded; a shredded subject's field loads as
:class:`Erased` (``reveal()`` raises :class:`~riskguard.errors.ShreddedError`). In Core, a
plain field decrypts in the result; a row- or subject-bound one returns :class:`Sealed`,
opened with :meth:`FieldCrypto.reveal`, and is written with :meth:`FieldCrypto.prepare`.
A column with a blind index is written only through the ORM or ``prepare`` too (a bulk
``UPDATE`` would leave its old index behind).

On SQLite, keep riskguard's tables in their own database file (the default
``riskguard.db``) when the application's tables live in SQLite too: the keyring creates a
subject's key in a transaction of its own while the application's flush holds SQLite's
single write lock, and would wait for it until the busy timeout.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapper, attributes
from sqlalchemy.types import TypeDecorator

from riskguard.crypto._format import decode_text, encode_text, row_key
from riskguard.errors import InvalidValue, ShreddedError

if TYPE_CHECKING:
    from riskguard.crypto._cipher import FieldKey
    from riskguard.crypto._crypto import FieldCrypto

__all__ = [
    "BlindIndexSpec",
    "EncryptedBytes",
    "EncryptedJSON",
    "EncryptedString",
    "Erased",
    "Prepared",
    "Sealed",
]

_OVERHEAD = 41  # header 25 + tag 16


@dataclass(frozen=True, slots=True)
class BlindIndexSpec:
    """A blind index beside an encrypted column.

    :param column: the companion column (``String(ceil(bits / 4))``).
    :param normaliser: ``phone``, ``cn_id``, ``address``, ``email``, ``exact``, ``lower``.
    :param bits: the truncation the planner chose (``riskguard.crypto.plan_bits``).
    :param name: the index name (part of its derived key); default: the column name.
    """

    column: str
    normaliser: str
    bits: int
    name: str | None = None

    @property
    def index_name(self) -> str:
        """The name the index key is derived for."""
        return self.name or self.column


class Sealed:
    """A bound ciphertext read in Core (or not yet opened): open it with
    :meth:`FieldCrypto.reveal`. Never prints its bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.data)} bytes>"


class Erased(Sealed):
    """A field of a shredded subject, as the ORM loads it: render it as "erased"."""

    __slots__ = ()

    def reveal(self) -> str:
        """:raises ShreddedError: always — the value is erased."""
        raise ShreddedError()

    def __str__(self) -> str:
        return "erased"


class Prepared:
    """A value already encrypted for its place (written as is by the column type)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Prepared {len(self.data)} bytes>"


class _Encrypted(TypeDecorator[Any]):
    """Base of the encrypted column types; subclasses convert values to and from bytes."""

    impl = sa.Text
    cache_ok = True

    def __init__(
        self,
        crypto: FieldCrypto | Callable[[], FieldCrypto],
        *,
        length: int | None = None,
        keyset: str | None = None,
        per_row: bool = False,
        subject: str | None = None,
        blind_index: BlindIndexSpec | None = None,
        binary: bool = False,
    ) -> None:
        super().__init__()
        self.crypto = crypto
        self.length = length
        self.keyset = keyset
        self.per_row = per_row
        self.subject = subject
        self.blind_index = blind_index
        self.binary = binary
        self.table: str | None = None
        self.column: str | None = None
        self._fk: FieldKey | None = None

    # -- binding to a place ------------------------------------------------------------

    def _bind(self, table: str, column: str) -> _Encrypted:
        t = self if self.table is None else copy.copy(self)
        t.table, t.column, t._fk = table, column, None
        return t

    @property
    def bound(self) -> bool:
        """Whether values carry a row or subject binding (Core writes need ``prepare``)."""
        return self.per_row or self.subject is not None

    def resolve_crypto(self) -> FieldCrypto:
        """The :class:`FieldCrypto` (called now if a factory was given)."""
        from riskguard.crypto._crypto import FieldCrypto

        c = self.crypto
        return c if isinstance(c, FieldCrypto) else c()

    def field(self) -> FieldKey:
        """The field cipher for this column.

        :raises InvalidValue: the column is not attached to a table.
        """
        fk = self._fk
        if fk is None:
            if self.table is None or self.column is None:
                raise InvalidValue(
                    "an encrypted column type is used outside a table", kind="column",
                    check="binding",
                )  # fmt: skip
            crypto = self.resolve_crypto()
            fk = crypto.cipher.field(
                self.table, self.column, keyset=self.keyset, per_row=self.per_row,
                per_subject=self.subject is not None,
            )  # fmt: skip
            self._fk = fk
        return fk

    # -- storage -------------------------------------------------------------------------

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if self.binary:
            return dialect.type_descriptor(sa.LargeBinary())
        chars = -(-((self.length * 4 + _OVERHEAD) * 4) // 3) if self.length is not None else None
        if dialect.name in ("mysql", "mariadb"):
            # base64url is case-sensitive; MariaDB's default collation is not, and would let
            # `keys rewrap`/`status` take version 1's prefix for version 27's.
            if chars is not None:
                return dialect.type_descriptor(
                    mysql.VARCHAR(chars, charset="ascii", collation="ascii_bin")
                )
            return dialect.type_descriptor(mysql.MEDIUMTEXT(charset="ascii", collation="ascii_bin"))
        return dialect.type_descriptor(sa.String(chars) if chars is not None else sa.Text())

    def to_bytes(self, value: Any) -> bytes:
        """Plaintext value → bytes (subclasses)."""
        raise NotImplementedError

    def from_bytes(self, data: bytes) -> Any:
        """Bytes → plaintext value (subclasses)."""
        raise NotImplementedError

    def encode(self, data: bytes) -> Any:
        """Ciphertext bytes → the stored form (bytes or base64url text)."""
        return data if self.binary else encode_text(data)

    def decode(self, stored: Any) -> bytes:
        """The stored form → ciphertext bytes."""
        return bytes(stored) if self.binary else decode_text(stored)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        cls = type(value)
        if cls is Prepared or cls is Sealed or cls is Erased:
            # Already ciphertext: prepared for its place, or read and written back as is.
            return self.encode(value.data)
        fk = self._fk if self._fk is not None else self.field()
        if self.per_row or self.subject is not None or self.blind_index is not None:
            # A bound value needs its row or subject; an indexed one needs its blind index
            # written beside it (a bulk UPDATE would leave the old index behind).
            raise InvalidValue(
                f"{fk.name} is bound to its row or subject, or has a blind index: write it "
                "through the ORM or with FieldCrypto.prepare()",
                kind=fk.name,
                check="binding",
            )
        data = fk.encrypt(self.to_bytes(value))
        return data if self.binary else encode_text(data)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if self.binary:
            data = value if type(value) is bytes else bytes(value)
        else:
            data = decode_text(value)
        if self.per_row or self.subject is not None:
            return Sealed(data)
        fk = self._fk if self._fk is not None else self.field()
        return self.from_bytes(fk.decrypt(data))

    class comparator_factory(TypeDecorator.Comparator[Any]):
        """Adds :meth:`blind_eq` to encrypted columns (Core and ORM)."""

        def blind_eq(self, value: str) -> sa.ColumnElement[bool]:
            """Rows whose blind index matches ``value`` (after normalisation): the matching
            row and, by design, a few coincidences — compare decrypted values to keep the
            exact ones.

            :raises InvalidValue: ``value`` does not normalise (e.g. not a phone number).
            :raises ConfigError: the column has no blind index.
            """
            t = self.type
            assert isinstance(t, _Encrypted)
            return t.resolve_crypto().blind_clause(t, self.expr, value)


class EncryptedString(_Encrypted):
    """Text, encrypted (UTF-8). ``length`` is the longest plaintext in characters (sizes
    a ``VARCHAR``; default ``TEXT``)."""

    cache_ok = True

    def to_bytes(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise InvalidValue(
                f"an EncryptedString takes str, not {type(value).__name__}",
                kind="column", check="type",
            )  # fmt: skip
        return value.encode("utf-8")

    def from_bytes(self, data: bytes) -> str:
        return data.decode("utf-8")


class EncryptedBytes(_Encrypted):
    """Bytes, encrypted."""

    cache_ok = True

    def to_bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidValue(
                f"an EncryptedBytes takes bytes, not {type(value).__name__}",
                kind="column", check="type",
            )  # fmt: skip
        return bytes(value)

    def from_bytes(self, data: bytes) -> bytes:
        return data


class EncryptedJSON(_Encrypted):
    """A JSON value, encrypted (serialised with sorted keys, UTF-8)."""

    cache_ok = True

    def to_bytes(self, value: Any) -> bytes:
        try:
            return json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidValue(
                f"the value is not JSON-serialisable ({type(exc).__name__})",
                kind="column", check="type",
            ) from None  # fmt: skip

    def from_bytes(self, data: bytes) -> Any:
        return json.loads(data)


@event.listens_for(sa.Column, "after_parent_attach")
def _on_attach(column: sa.Column[Any], table: Any) -> None:
    t = column.type
    if isinstance(t, _Encrypted) and isinstance(table, sa.Table):
        column.type = t._bind(table.name, column.name)


# -- the ORM: binding rows and subjects at flush, opening at load --------------------------


@dataclass(frozen=True, slots=True)
class _OrmField:
    key: str
    type: _Encrypted
    index_key: str | None


@dataclass(frozen=True, slots=True)
class _OrmSpec:
    fields: tuple[_OrmField, ...]
    subject_keys: dict[str, str]  # subject column name -> attribute key


def _orm_spec(mapper: Mapper[Any]) -> _OrmSpec | None:
    out: list[_OrmField] = []
    subjects: dict[str, str] = {}
    for prop in mapper.column_attrs:
        col = prop.columns[0]
        t = col.type
        if not isinstance(t, _Encrypted):
            continue
        index_key = None
        table = col.table
        assert isinstance(table, sa.Table)  # mapped columns of a declarative class
        if t.blind_index is not None:
            index_key = mapper.get_property_by_column(table.c[t.blind_index.column]).key
        if t.subject is not None:
            subjects[t.subject] = mapper.get_property_by_column(table.c[t.subject]).key
        out.append(_OrmField(prop.key, t, index_key))
    return _OrmSpec(tuple(out), subjects) if out else None


def _row_id(mapper: Mapper[Any], target: Any, *, fill: bool) -> str | None:
    values = []
    for col in mapper.primary_key:
        prop = mapper.get_property_by_column(col)
        v = attributes.instance_state(target).dict.get(prop.key)
        if v is None and fill and col.default is not None and not col.default.is_sequence:
            d = col.default
            v = d.arg(None) if getattr(d, "is_callable", False) else getattr(d, "arg", None)
            if v is not None:
                setattr(target, prop.key, v)
        if v is None:
            return None
        values.append(str(v))
    return row_key(values)


def _subject_of(spec: _OrmSpec, f: _OrmField, target: Any) -> str | None:
    if f.type.subject is None:
        return None
    v = attributes.instance_state(target).dict.get(spec.subject_keys[f.type.subject])
    return None if v is None else str(v)


def _before_write(mapper: Mapper[Any], target: Any, spec: _OrmSpec, insert: bool) -> None:
    state = attributes.instance_state(target)
    # On insert, client-side key defaults are filled in first: the row or the subject
    # binding may be the primary key.
    if insert or any(f.type.per_row for f in spec.fields):
        row = _row_id(mapper, target, fill=insert)
    else:
        row = None
    context_changed = (
        insert
        or _changed(state, [p.key for p in _pk_props(mapper)])
        or _changed(state, list(spec.subject_keys.values()))
    )
    restore: dict[str, Any] = {}
    saved = state.info.get("riskguard_restore", {})
    for f in spec.fields:
        if not insert and not context_changed and not state.attrs[f.key].history.has_changes():
            continue
        value = state.dict.get(f.key)
        if isinstance(value, Prepared) and f.key in saved:
            value = saved[f.key]  # a flush that failed left ciphertext: encrypt again
        if isinstance(value, Prepared | Sealed):
            if context_changed and not insert:
                raise InvalidValue(
                    f"{f.type.field().name} cannot follow a change of its row key or subject "
                    "without being loaded (it is bound to the old one)",
                    kind=f.type.field().name, check="binding",
                    hint="load the column before changing the primary key or subject",
                )  # fmt: skip
            continue  # already ciphertext (or erased: cannot be rewritten)
        fk = f.type.field()
        if value is None:
            if f.index_key is not None:
                setattr(target, f.index_key, None)
            continue
        if f.type.per_row and row is None:
            raise InvalidValue(
                f"{fk.name} is bound to its row, but the row's primary key is not known before "
                "the INSERT",
                kind=fk.name,
                check="binding",
                hint="give the primary key a client-side default (UUID, snowflake id) or set "
                "it before adding the object",
            )
        subject = _subject_of(spec, f, target)
        if f.type.subject is not None and subject is None:
            raise InvalidValue(
                f"{fk.name} is encrypted per subject, but {f.type.subject!r} is not set",
                kind=fk.name,
                check="binding",
            )
        data = fk.encrypt(f.type.to_bytes(value), row=row, subject=subject)
        setattr(target, f.key, Prepared(data))
        restore[f.key] = value
        if f.index_key is not None and f.type.blind_index is not None:
            crypto = f.type.resolve_crypto()
            setattr(target, f.index_key, crypto.blind_value(f.type, value))
    if restore:
        state.info["riskguard_restore"] = restore


def _changed(state: Any, keys: list[str]) -> bool:
    return any(state.attrs[k].history.has_changes() for k in keys)


def _pk_props(mapper: Mapper[Any]) -> list[Any]:
    return [mapper.get_property_by_column(c) for c in mapper.primary_key]


def _after_write(target: Any) -> None:
    state = attributes.instance_state(target)
    restore = state.info.pop("riskguard_restore", None)
    if restore:
        for key, value in restore.items():
            attributes.set_committed_value(target, key, value)


def _open(mapper: Mapper[Any], target: Any, spec: _OrmSpec) -> None:
    state = attributes.instance_state(target)
    row: str | None = None
    row_done = False
    for f in spec.fields:
        value = state.dict.get(f.key)
        if type(value) is not Sealed:
            continue
        if f.type.per_row and not row_done:
            row, row_done = _row_id(mapper, target, fill=False), True
        subject = _subject_of(spec, f, target)
        if (f.type.per_row and row is None) or (f.type.subject is not None and subject is None):
            continue  # the binding columns were not loaded: leave it sealed
        try:
            plain = f.type.from_bytes(f.type.field().decrypt(value.data, row=row, subject=subject))
        except ShreddedError:
            plain = Erased(value.data)
        attributes.set_committed_value(target, f.key, plain)


@event.listens_for(Mapper, "mapper_configured")
def _on_mapper_configured(mapper: Mapper[Any], class_: type) -> None:
    spec = _orm_spec(mapper)
    if spec is None or not any(f.type.bound or f.index_key for f in spec.fields):
        return

    def before_insert(m: Mapper[Any], _conn: Any, target: Any) -> None:
        _before_write(m, target, spec, insert=True)

    def before_update(m: Mapper[Any], _conn: Any, target: Any) -> None:
        _before_write(m, target, spec, insert=False)

    def after_write(_m: Mapper[Any], _conn: Any, target: Any) -> None:
        _after_write(target)

    def on_load(target: Any, _ctx: Any) -> None:
        _open(mapper, target, spec)

    def on_refresh(target: Any, _ctx: Any, _attrs: Any) -> None:
        _open(mapper, target, spec)

    event.listen(mapper, "before_insert", before_insert)
    event.listen(mapper, "before_update", before_update)
    event.listen(mapper, "after_insert", after_write)
    event.listen(mapper, "after_update", after_write)
    event.listen(mapper, "load", on_load)
    event.listen(mapper, "refresh", on_refresh)


def prepare_values(table: sa.Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """Core writes: the ``values`` of one row with each encrypted column's plaintext
    replaced by its ciphertext (bound to the row and subject found in ``values``) and
    each blind index filled in.

    :raises InvalidValue: a bound column's row key or subject is missing from ``values``.
    """
    out = dict(values)
    pk = [c.name for c in table.primary_key.columns]
    for col in table.columns:
        t = col.type
        if not isinstance(t, _Encrypted) or col.name not in values:
            continue
        value = values[col.name]
        if value is None or isinstance(value, Prepared | Sealed):
            if value is None and t.blind_index is not None:
                out[t.blind_index.column] = None
            continue
        fk = t.field()
        row = _core_row(table, pk, values, fk.name) if t.per_row else None
        subject = _core_subject(t, values, fk.name)
        out[col.name] = Prepared(fk.encrypt(t.to_bytes(value), row=row, subject=subject))
        if t.blind_index is not None:
            out[t.blind_index.column] = t.resolve_crypto().blind_value(t, value)
    return out


def _core_row(table: sa.Table, pk: list[str], values: Mapping[str, Any], name: str) -> str:
    if not pk or any(values.get(k) is None for k in pk):
        raise InvalidValue(
            f"{name} is bound to its row: the values must include the primary key "
            f"({', '.join(pk) or 'none defined'})",
            kind=name,
            check="binding",
        )
    return row_key([values[k] for k in pk])


def _core_subject(t: _Encrypted, values: Mapping[str, Any], name: str) -> str | None:
    if t.subject is None:
        return None
    v = values.get(t.subject)
    if v is None:
        raise InvalidValue(
            f"{name} is encrypted per subject: the values must include {t.subject!r}",
            kind=name,
            check="binding",
        )
    return str(v)


def reveal_values(table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    """Core reads: a result row (mapping) with each :class:`Sealed` column opened.

    :raises ShreddedError: a column belongs to a shredded subject.
    :raises DecryptionError: a value is damaged or misplaced.
    """
    out = dict(row)
    pk = [c.name for c in table.primary_key.columns]
    for col in table.columns:
        t = col.type
        v = row.get(col.name)
        if not isinstance(t, _Encrypted) or type(v) is not Sealed:
            continue
        fk = t.field()
        r = _core_row(table, pk, row, fk.name) if t.per_row else None
        s = _core_subject(t, row, fk.name)
        out[col.name] = t.from_bytes(fk.decrypt(v.data, row=r, subject=s))
    return out
