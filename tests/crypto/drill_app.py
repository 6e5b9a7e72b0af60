"""The application table the rotation drill encrypts, shared by the test and its child
process (which runs the rewrap that gets killed half-way)."""

from __future__ import annotations

import sys

import sqlalchemy as sa

from riskguard import db
from riskguard.crypto import EncryptedString, FieldCrypto, FileKeyProvider, Keyring, rewrap_column

PASSPHRASE = "drill passphrase, not secret"
CACHE_TTL_S = 60


def make_table(crypto: FieldCrypto) -> sa.Table:
    """``drill_customer(id, phone)``; phone encrypted and bound to its row."""
    md = sa.MetaData()
    return sa.Table(
        "drill_customer",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("phone", EncryptedString(crypto, length=20, per_row=True)),
    )


def open_crypto(url: str, keyring_path: str) -> tuple[sa.Engine, FieldCrypto]:
    """An engine and a FieldCrypto on the drill's database and keyring file."""
    engine = db.create_engine(url)
    provider = FileKeyProvider.open(keyring_path, PASSPHRASE)
    return engine, FieldCrypto(Keyring(engine, provider, cache_ttl_s=CACHE_TTL_S))


def main(url: str, keyring_path: str, batch_size: str) -> None:
    """Rewrap, printing the running total after each committed batch."""
    engine, crypto = open_crypto(url, keyring_path)
    table = make_table(crypto)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        print(done, flush=True)

    rewrap_column(engine, table, "phone", batch_size=int(batch_size), progress=progress)
    print("finished", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
