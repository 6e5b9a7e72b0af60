"""Encrypted column types in the ORM and in Core, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from riskguard.crypto import (
    BlindIndexSpec,
    EncryptedBytes,
    EncryptedJSON,
    EncryptedString,
    Erased,
    FieldCrypto,
    Sealed,
)
from riskguard.errors import DecryptionError, InvalidValue, ShreddedError
from tests.crypto.conftest import CryptoEnv

SPELLINGS = ["13800138000", "+86 138-0013-8000", "0086 138 0013 8000", "(+86) 138 0013 8000"]


def _models(crypto: FieldCrypto) -> dict[str, Any]:
    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "app_customer"
        id: Mapped[str] = mapped_column(
            sa.String(36), primary_key=True, default=lambda: str(uuid.uuid4())
        )
        name: Mapped[str | None] = mapped_column(EncryptedString(crypto, length=64))
        phone: Mapped[str | None] = mapped_column(
            EncryptedString(
                crypto,
                length=32,
                per_row=True,
                subject="id",
                blind_index=BlindIndexSpec("phone_bidx", "phone", bits=16),
            )
        )
        phone_bidx: Mapped[str | None] = mapped_column(sa.String(4), index=True)
        address: Mapped[dict[str, Any] | None] = mapped_column(
            EncryptedJSON(crypto, per_row=True, subject="id")
        )
        id_card: Mapped[bytes | None] = mapped_column(
            EncryptedBytes(crypto, binary=True, per_row=True)
        )

    class Order(Base):
        __tablename__ = "app_order"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
        note: Mapped[str | None] = mapped_column(EncryptedString(crypto, per_row=True))

    return {"Base": Base, "Customer": Customer, "Order": Order}


@pytest.fixture
def app(crypto_env: CryptoEnv) -> Iterator[tuple[CryptoEnv, dict[str, Any]]]:
    m = _models(crypto_env.crypto)
    m["Base"].metadata.create_all(crypto_env.ns.engine)
    yield crypto_env, m
    m["Base"].metadata.drop_all(crypto_env.ns.engine)


def test_orm_round_trip_and_stored_form(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    Customer = m["Customer"]
    engine = env.ns.engine
    with Session(engine) as s:
        c = Customer(name="张三", phone="13800138000", address={"city": "北京"}, id_card=b"1101")
        s.add(c)
        s.commit()
        cid = c.id
        assert c.phone == "13800138000"  # the instance keeps its plaintext after flush
    with engine.connect() as conn:
        raw = conn.execute(
            sa.text("SELECT name, phone, address, phone_bidx FROM app_customer")
        ).one()
    assert "张三" not in raw[0] and "138" not in raw[1] and "北京" not in raw[2]
    assert raw[3] is not None and len(raw[3]) == 4
    with Session(engine) as s:
        c = s.get(Customer, cid)
        assert (c.name, c.phone, c.address, c.id_card) == (
            "张三",
            "13800138000",
            {"city": "北京"},
            b"1101",
        )
        c.phone = "+86 139 0000 0000"
        s.commit()
    with Session(engine) as s:
        assert s.get(Customer, cid).phone == "+86 139 0000 0000"


def test_blind_index_finds_every_spelling(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    Customer = m["Customer"]
    with Session(env.ns.engine) as s:
        s.add_all([Customer(phone="13800138000"), Customer(phone="13912345678")])
        s.add_all([Customer(phone=f"1370000{i:04d}") for i in range(30)])
        s.commit()
    for spelling in SPELLINGS:
        with Session(env.ns.engine) as s:
            rows = s.scalars(sa.select(Customer).where(Customer.phone.blind_eq(spelling))).all()
            assert "13800138000" in [r.phone for r in rows]
    with pytest.raises(InvalidValue) as ei:
        Customer.phone.blind_eq("12345")
    assert "12345" not in str(ei.value)


def test_row_and_column_cut_and_paste_fail(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    Customer = m["Customer"]
    engine = env.ns.engine
    with Session(engine) as s:
        a, b = Customer(name="A", phone="13800138000"), Customer(name="B", phone="13912345678")
        s.add_all([a, b])
        s.commit()
        aid, bid = a.id, b.id
    t = Customer.__table__
    with engine.begin() as conn:
        pa = conn.execute(
            sa.select(sa.type_coerce(t.c.phone, sa.Text)).where(t.c.id == aid)
        ).scalar_one()
        conn.execute(t.update().where(t.c.id == bid).values(phone=Sealed(_raw(pa))))
    with Session(engine) as s, pytest.raises(DecryptionError) as ei:
        s.get(Customer, bid)
    assert ei.value.check == "context"
    # A column's value pasted into another column of the same row fails too.
    with engine.begin() as conn:
        na = conn.execute(
            sa.select(sa.type_coerce(t.c.name, sa.Text)).where(t.c.id == aid)
        ).scalar_one()
        conn.execute(t.update().where(t.c.id == aid).values(phone=Sealed(_raw(na))))
    with Session(engine) as s, pytest.raises(DecryptionError) as ei:
        s.get(Customer, aid)
    assert ei.value.check == "context"


def _raw(text: str) -> bytes:
    from riskguard.crypto._format import decode_text

    return decode_text(text)


def test_core_prepare_and_reveal(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    t = m["Customer"].__table__
    crypto = env.crypto
    with env.ns.engine.begin() as conn:
        conn.execute(
            t.insert(), crypto.prepare(t, {"id": "c-1", "name": "N", "phone": "13800138000"})
        )
        # SQLAlchemy wraps errors raised while binding parameters; the cause is ours.
        with pytest.raises(sa.exc.StatementError) as ei:
            conn.execute(t.insert().values(id="c-2", phone="13800138000"))
        assert isinstance(ei.value.orig, InvalidValue) and "bound" in str(ei.value.orig)
    with env.ns.engine.connect() as conn:
        row = (
            conn.execute(sa.select(t).where(t.c.phone.blind_eq("+8613800138000"))).mappings().one()
        )
    assert row["name"] == "N"  # a plain field decrypts in the result
    assert isinstance(row["phone"], Sealed) and "138" not in repr(row["phone"])
    assert crypto.reveal(t, row)["phone"] == "13800138000"
    with pytest.raises(InvalidValue, match="primary key"):
        crypto.prepare(t, {"phone": "13800138000"})


def test_autoincrement_key_cannot_bind_rows(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    with Session(env.ns.engine) as s:
        s.add(m["Order"](note="leave at the door"))
        with pytest.raises(InvalidValue, match="primary key is not known"):
            s.commit()


def test_shredded_subject_loads_as_erased(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    env, m = app
    Customer = m["Customer"]
    with Session(env.ns.engine) as s:
        a, b = (
            Customer(name="A", phone="13800138000", address={"c": 1}),
            Customer(phone="13912345678"),
        )
        s.add_all([a, b])
        s.commit()
        aid, bid = a.id, b.id
    result = env.crypto.shred(aid, tables=[Customer.__table__], engine=env.ns.engine)
    assert result.indexes_cleared == {"app_customer.phone_bidx": 1}
    with Session(env.ns.engine) as s:
        a = s.get(Customer, aid)
        assert isinstance(a.phone, Erased) and str(a.phone) == "erased"
        assert isinstance(a.address, Erased)
        assert a.name == "A"  # not a per-subject field
        with pytest.raises(ShreddedError):
            a.phone.reveal()
        assert a.phone_bidx is None
        assert s.get(Customer, bid).phone == "13912345678"
        rows = s.scalars(sa.select(Customer).where(Customer.phone.blind_eq("13800138000"))).all()
        assert rows == []


def test_index_root_rotation_and_rebuild(app: tuple[CryptoEnv, dict[str, Any]]) -> None:
    """After the index root rotates, searches find rows indexed under either root; the
    rebuild moves every row to the new root, after which the old one can be retired."""
    from riskguard.crypto import INDEX_KEYSET, rebuild_blind_index

    env, m = app
    Customer = m["Customer"]
    t = Customer.__table__
    with Session(env.ns.engine) as s:
        s.add_all([Customer(phone="13800138000"), Customer(phone="13700000000")])
        s.commit()
    kr = env.keyring
    kr.rotate(INDEX_KEYSET)
    with Session(env.ns.engine) as s:
        s.add(Customer(phone="+86 138 0013 8000"))
        s.commit()

    def found() -> list[str]:
        with Session(env.ns.engine) as s:
            rows = s.scalars(sa.select(Customer).where(Customer.phone.blind_eq("13800138000")))
            return sorted(r.phone for r in rows if r.phone.replace(" ", "").endswith("8000"))

    assert found() == ["+86 138 0013 8000", "13800138000"]  # one under each root
    with env.ns.engine.connect() as conn:
        before = dict(conn.execute(sa.select(t.c.id, t.c.phone_bidx)).all())
    report = rebuild_blind_index(env.ns.engine, t, "phone", batch_size=1)
    assert (report.scanned, report.updated, report.failed) == (3, 2, 0)
    assert report.index_version == 2
    with env.ns.engine.connect() as conn:
        after = dict(conn.execute(sa.select(t.c.id, t.c.phone_bidx)).all())
    assert sum(before[k] != after[k] for k in before) == 2
    again = rebuild_blind_index(env.ns.engine, t, "phone")
    assert again.updated == 0
    info = kr.describe(INDEX_KEYSET)
    kr.retire(INDEX_KEYSET, 1, remaining=0, now=info.rotated_at + kr.cache_ttl_s)
    assert found() == ["+86 138 0013 8000", "13800138000"]


def test_bulk_writes_cannot_leave_a_stale_blind_index(
    app: tuple[CryptoEnv, dict[str, Any]],
) -> None:
    env, m = app
    Customer = m["Customer"]
    with Session(env.ns.engine) as s:
        s.add(Customer(phone="13800138000"))
        s.commit()
        with pytest.raises(sa.exc.StatementError) as ei:
            s.execute(sa.update(Customer).values(phone="13912345678"))
        assert isinstance(ei.value.orig, InvalidValue) and "blind index" in str(ei.value.orig)


def test_a_failed_flush_can_be_retried_with_another_key(
    app: tuple[CryptoEnv, dict[str, Any]],
) -> None:
    """The flush fails (duplicate key) after the value was encrypted for the first id; the
    retry under a new id encrypts again for that id, and the value reads back."""
    env, m = app
    Customer = m["Customer"]
    with Session(env.ns.engine) as s:
        s.add(Customer(id="dup", phone="13800138000"))
        s.commit()
    with Session(env.ns.engine) as s:
        c = Customer(id="dup", phone="13912345678")
        s.add(c)
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()
        s.rollback()
        c.id = "fresh"
        s.add(c)
        s.commit()
    with Session(env.ns.engine) as s:
        assert s.get(Customer, "fresh").phone == "13912345678"


def test_subject_bound_to_a_defaulted_primary_key(crypto_env: CryptoEnv) -> None:
    class Base(DeclarativeBase):
        pass

    class Rider(Base):
        __tablename__ = "app_rider"
        id: Mapped[str] = mapped_column(
            sa.String(36), primary_key=True, default=lambda: str(uuid.uuid4())
        )
        id_number: Mapped[str | None] = mapped_column(
            EncryptedString(crypto_env.crypto, subject="id")
        )

    Base.metadata.create_all(crypto_env.ns.engine)
    with Session(crypto_env.ns.engine) as s:
        r = Rider(id_number="110101199003077777")
        s.add(r)
        s.commit()
        rid = r.id
    with Session(crypto_env.ns.engine) as s:
        assert s.get(Rider, rid).id_number == "110101199003077777"


def test_composite_keys_bind_unambiguously(crypto_env: CryptoEnv) -> None:
    md = sa.MetaData()
    t = sa.Table(
        "app_pair",
        md,
        sa.Column("a", sa.String(10), primary_key=True),
        sa.Column("b", sa.String(10), primary_key=True),
        sa.Column("v", EncryptedString(crypto_env.crypto, per_row=True)),
    )
    md.create_all(crypto_env.ns.engine)
    c = crypto_env.crypto
    with crypto_env.ns.engine.begin() as conn:
        conn.execute(t.insert(), c.prepare(t, {"a": "x:1", "b": "y", "v": "secret"}))
    with crypto_env.ns.engine.connect() as conn:
        row = dict(conn.execute(sa.select(t)).mappings().one())
    assert c.reveal(t, row)["v"] == "secret"
    # ("x", "1:y") would have joined to the same text as ("x:1", "y") with a separator.
    moved = {**row, "a": "x", "b": "1:y"}
    with pytest.raises(DecryptionError) as ei:
        c.reveal(t, moved)
    assert ei.value.check == "context"
