"""The keyring's tables: keysets and their wrapped data-key versions.

``rg_crypto_keyset`` names a keyset (``field:customer.phone``, ``subject:u-1001``,
``index:blind``) and remembers its primary version and ``min_decryption_version``;
``rg_crypto_key`` holds each version's data key *wrapped* by a key-encryption key of the
:class:`~riskguard.crypto.KeyProvider` (never in clear), its state and the KEK's id.
A database backup therefore holds only wrapped keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from riskguard.db import ExactString, map_errors, meta_table, metadata

__all__ = ["ensure_lock_row", "key_table", "keyset_table"]

keyset_table = sa.Table(
    "rg_crypto_keyset",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", ExactString(255), nullable=False, unique=True),
    # field | subject | index
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("subject", ExactString(255), nullable=True),
    sa.Column("primary_version", sa.Integer, nullable=True),
    sa.Column("min_decryption_version", sa.Integer, nullable=False, server_default="1"),
    # active | shredded
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # when the current primary was promoted: retiring its predecessor waits out the caches
    sa.Column("rotated_at", sa.BigInteger, nullable=False),
)

key_table = sa.Table(
    "rg_crypto_key",
    metadata,
    sa.Column(
        "keyset_id",
        sa.Integer,
        sa.ForeignKey("rg_crypto_keyset.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    # primary | decrypt_only | disabled | destroyed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("kek_id", sa.String(128), nullable=True),
    # NULL once destroyed: the wrapped bytes are gone, not only marked
    sa.Column("wrapped", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("changed_at", sa.BigInteger, nullable=False),
    sa.Index("ix_rg_crypto_key_kek", "kek_id"),
)


def ensure_lock_row(engine: Engine, key: str) -> None:
    """Insert ``rg_meta`` row ``key`` with an empty value unless it exists (a row that
    writers lock; inserted once so that a lock never has to take a row that isn't there).
    """
    q = sa.select(meta_table.c.key).where(meta_table.c.key == key)
    with map_errors(engine, "creating the keyring's lock row"), engine.connect() as conn:
        if conn.execute(q).first() is not None:
            return
        try:
            with conn.begin():
                conn.execute(meta_table.insert().values(key=key, value=""))
        except IntegrityError:
            pass  # another process inserted it first
