"""The keyring's tables: keysets and their wrapped data-key versions.

``rg_crypto_keyset`` names a keyset (``field:customer.phone``, ``subject:u-1001``,
``index:blind``) and remembers its primary version and ``min_decryption_version``;
``rg_crypto_key`` holds each version's data key *wrapped* by a key-encryption key of the
:class:`~riskguard.crypto.KeyProvider` (never in clear), its state and the KEK's id.
A database backup therefore holds only wrapped keys.
"""

from __future__ import annotations

import sqlalchemy as sa

from riskguard.db import ExactString, metadata

__all__ = ["key_table", "keyset_table"]

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
