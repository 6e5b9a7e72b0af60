"""An application's models module, as ``riskguard keys --models`` imports it: its column
types reach the crypto of a Guard built from ``$RISKGUARD_CONFIG``."""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa

from riskguard import Guard
from riskguard.crypto import BlindIndexSpec, EncryptedString, FieldCrypto


@cache
def guard() -> Guard:
    """The application's Guard (one per process)."""
    return Guard.from_config()


def crypto() -> FieldCrypto:
    """The Guard's field crypto (resolved when a column is first used)."""
    return guard().crypto


metadata = sa.MetaData()
customer = sa.Table(
    "cli_customer",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("phone", EncryptedString(crypto, length=20, per_row=True)),
    sa.Column(
        "address",
        EncryptedString(
            crypto, subject="id", blind_index=BlindIndexSpec("address_bidx", "address", bits=8)
        ),
    ),
    sa.Column("address_bidx", sa.String(2)),
)
