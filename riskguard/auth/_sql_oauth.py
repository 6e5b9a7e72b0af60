"""SQL stores for the OAuth server: registered clients and authorization codes.

* :class:`SqlClientRegistry` (``rg_auth_client``): one row per client; the secret only as
  its scrypt hash.
* :class:`SqlAuthorizationCodeStore` (``rg_auth_code``): codes by SHA-256. Redemption is
  one ``UPDATE … WHERE used_at IS NULL AND expires_at > now`` whose row count decides
  between *ok* and the other outcomes, so two concurrent redemptions cannot both succeed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from riskguard.auth._clients import OAuthClient
from riskguard.auth._codes import REUSE_MEMORY, AuthorizationCode, ConsumeResult
from riskguard.db import ExactString, map_errors, metadata, write_transaction
from riskguard.errors import StorageError

__all__ = ["SqlAuthorizationCodeStore", "SqlClientRegistry", "client_table", "code_table"]

client_table = sa.Table(
    "rg_auth_client",
    metadata,
    sa.Column("client_id", ExactString(255), primary_key=True),
    sa.Column("secret_hash", sa.String(255)),
    sa.Column("auth_method", sa.String(32), nullable=False),
    sa.Column("redirect_uris", sa.Text, nullable=False),  # JSON array
    sa.Column("grant_types", sa.String(255), nullable=False),  # space-separated
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("tenant", sa.String(255)),
    sa.Column("roles", sa.Text, nullable=False),  # JSON array
    sa.Column("name", sa.String(255)),
    sa.Column("can_introspect", sa.Boolean, nullable=False),
)

code_table = sa.Table(
    "rg_auth_code",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("client_id", ExactString(255), nullable=False),
    sa.Column("redirect_uri", sa.Text),
    sa.Column("code_challenge", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("subject_type", sa.String(16), nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("tenant", sa.String(255)),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("claims", sa.Text, nullable=False),
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
    sa.Column("used_at", sa.Double),
    sa.Column("reused_at", sa.Double),
    sa.Column("access_jti", sa.String(255)),
    sa.Column("access_exp", sa.Double),
    sa.Column("family_id", sa.String(64)),
)

_C, _K = client_table.c, code_table.c


@contextmanager
def _writing(engine: Engine, what: str) -> Iterator[Connection]:
    with map_errors(engine, what), write_transaction(engine) as conn:
        yield conn


def _client_row(client: OAuthClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "secret_hash": client.secret_hash,
        "auth_method": client.token_endpoint_auth_method,
        "redirect_uris": json.dumps(list(client.redirect_uris)),
        "grant_types": " ".join(client.grant_types),
        "scope": client.scope,
        "tenant": client.tenant,
        "roles": json.dumps(list(client.roles)),
        "name": client.name,
        "can_introspect": client.can_introspect,
    }


class SqlClientRegistry:
    """A :class:`~riskguard.auth.ClientRegistry` on riskguard's SQL tables.

    :param engine: an engine whose database has riskguard's tables.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, client: OAuthClient) -> None:
        """Register ``client``.

        :raises StorageError: a client with this id exists, or the database failed.
        """
        client.validate()
        with map_errors(self.engine, "registering a client"):
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(client_table.insert().values(_client_row(client)))
            except IntegrityError:
                raise StorageError(f"client {client.client_id!r} is registered already") from None

    def put(self, client: OAuthClient) -> None:
        """Register or replace ``client``.

        :raises StorageError: the database failed.
        """
        client.validate()
        with map_errors(self.engine, "updating a client"), write_transaction(self.engine) as c:
            done = c.execute(
                client_table.update()
                .where(_C.client_id == client.client_id)
                .values(_client_row(client))
            ).rowcount
            if not done:
                c.execute(client_table.insert().values(_client_row(client)))

    def remove(self, client_id: str) -> bool:
        """Unregister a client; ``False`` when there was none.

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "removing a client"), write_transaction(self.engine) as c:
            return bool(c.execute(client_table.delete().where(_C.client_id == client_id)).rowcount)

    def get(self, client_id: str) -> OAuthClient | None:
        """The client registered as ``client_id``, or ``None``.

        :raises StorageError: the database failed, or the stored row is inconsistent.
        """
        with map_errors(self.engine, "reading a client"), self.engine.connect() as conn:
            row = conn.execute(sa.select(client_table).where(_C.client_id == client_id)).first()
        if row is None:
            return None
        client = OAuthClient(
            client_id=row.client_id,
            secret_hash=row.secret_hash,
            token_endpoint_auth_method=row.auth_method,
            redirect_uris=tuple(json.loads(row.redirect_uris)),
            grant_types=tuple(row.grant_types.split()),
            scope=row.scope,
            tenant=row.tenant,
            roles=tuple(json.loads(row.roles)),
            name=row.name,
            can_introspect=bool(row.can_introspect),
        )
        try:
            client.validate()
        except ValueError as exc:
            raise StorageError(f"stored client {client_id!r} is inconsistent: {exc}") from None
        return client


def _code(row: Any) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=row.code_hash,
        client_id=row.client_id,
        redirect_uri=row.redirect_uri,
        code_challenge=row.code_challenge,
        subject=row.subject,
        subject_type=row.subject_type,
        scope=row.scope,
        tenant=row.tenant,
        roles=tuple(json.loads(row.roles)),
        claims=json.loads(row.claims),
        issued_at=float(row.issued_at),
        expires_at=float(row.expires_at),
        used_at=None if row.used_at is None else float(row.used_at),
        access_jti=row.access_jti,
        access_exp=None if row.access_exp is None else float(row.access_exp),
        family_id=row.family_id,
    )


class SqlAuthorizationCodeStore:
    """An :class:`~riskguard.auth.AuthorizationCodeStore` on riskguard's SQL tables.

    :param engine: an engine whose database has riskguard's tables.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, record: AuthorizationCode) -> None:
        """Store a new code.

        :raises StorageError: the hash exists already, or the database failed.
        """
        values = {
            "code_hash": record.code_hash,
            "client_id": record.client_id,
            "redirect_uri": record.redirect_uri,
            "code_challenge": record.code_challenge,
            "subject": record.subject,
            "subject_type": record.subject_type,
            "scope": record.scope,
            "tenant": record.tenant,
            "roles": json.dumps(list(record.roles)),
            "claims": json.dumps(dict(record.claims), sort_keys=True),
            "issued_at": record.issued_at,
            "expires_at": record.expires_at,
        }
        with _writing(self.engine, "storing an authorization code") as conn:
            conn.execute(code_table.insert().values(values))

    def consume(self, code_hash: str, *, now: float) -> ConsumeResult:
        """Redeem a code once (compare-and-set on ``used_at``).

        :raises StorageError: the database failed.
        """
        with _writing(self.engine, "redeeming an authorization code") as conn:
            taken = conn.execute(
                code_table.update()
                .where(_K.code_hash == code_hash, _K.used_at.is_(None), _K.expires_at > now)
                .values(used_at=now)
            ).rowcount
            row = conn.execute(sa.select(code_table).where(_K.code_hash == code_hash)).first()
            if row is None:
                return ConsumeResult("unknown")
            rec = _code(row)
            if taken == 1:
                return ConsumeResult("ok", rec)
            if rec.used_at is None:
                return ConsumeResult("expired", rec)
            conn.execute(
                code_table.update()
                .where(_K.code_hash == code_hash, _K.reused_at.is_(None))
                .values(reused_at=now)
            )
            return ConsumeResult("reused", rec)

    def attach(
        self, code_hash: str, *, access_jti: str, access_exp: float, family_id: str | None
    ) -> bool:
        """Record the tokens issued from a redeemed code (see the Protocol).

        :raises StorageError: the database failed.
        """
        with _writing(self.engine, "recording tokens of a code") as conn:
            conn.execute(
                code_table.update()
                .where(_K.code_hash == code_hash)
                .values(access_jti=access_jti, access_exp=access_exp, family_id=family_id)
            )
            reused = conn.execute(
                sa.select(_K.reused_at).where(_K.code_hash == code_hash)
            ).scalar_one_or_none()
        return reused is None

    def prune(self, *, now: float) -> int:
        """Delete codes expired more than an hour ago; return how many.

        :raises StorageError: the database failed.
        """
        with _writing(self.engine, "pruning authorization codes") as conn:
            cut = now - REUSE_MEMORY
            return int(conn.execute(code_table.delete().where(_K.expires_at <= cut)).rowcount)
