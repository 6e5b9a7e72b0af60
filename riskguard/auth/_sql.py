"""SQL stores for auth (SQLite, PostgreSQL, MariaDB) and their ``rg_auth_*`` tables.

* :class:`SqlDenyList`: revoked ``jti`` values (``rg_auth_denylist``), one upsert per
  revocation keeping the later expiry.
* :class:`SqlRefreshTokenStore`: refresh-token families (``rg_auth_refresh_family``) and
  tokens (``rg_auth_refresh``). A rotation locks the family row (``SELECT … FOR UPDATE``;
  ``BEGIN IMMEDIATE`` on SQLite), then consumes the token with a compare-and-set
  ``UPDATE … WHERE used_at IS NULL`` whose row count decides between *rotated* and
  *reused*. Revocation takes the same family lock, so a rotation never slips a successor
  past a concurrent revocation, and the access tokens a revocation returns include every
  successor committed before it.
* :class:`SqlReplayCache`: DPoP proof ids (``rg_auth_replay``), add-if-absent.

Times are seconds since the epoch in double-precision columns. Expired rows stay until
``prune(now=)``; schedule it (for example daily).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from riskguard.auth._denylist import check_jti
from riskguard.auth._refresh import (
    MAX_LEEWAY,
    AccessTokenRef,
    RefreshRecord,
    RotateResult,
    check_successor,
)
from riskguard.db import ExactString, engine_kind, map_errors, metadata, write_transaction

__all__ = [
    "SqlDenyList",
    "SqlRefreshTokenStore",
    "SqlReplayCache",
    "denylist_table",
    "family_table",
    "refresh_table",
    "replay_table",
]


denylist_table = sa.Table(
    "rg_auth_denylist",
    metadata,
    sa.Column("jti", ExactString(255), primary_key=True),
    sa.Column("expires_at", sa.Double, index=True),  # NULL: revoked for ever
)

family_table = sa.Table(
    "rg_auth_refresh_family",
    metadata,
    sa.Column("family_id", ExactString(64), primary_key=True),
    sa.Column("client_id", sa.String(255), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),  # its last token's
    sa.Column("revoked_at", sa.Double),
    sa.Column("revoke_reason", sa.String(32)),
)

refresh_table = sa.Table(
    "rg_auth_refresh",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "family_id",
        ExactString(64),
        sa.ForeignKey("rg_auth_refresh_family.family_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("client_id", sa.String(255), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("subject_type", sa.String(16), nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("audience", sa.String(255), nullable=False),
    sa.Column("tenant", sa.String(255)),
    sa.Column("roles", sa.Text, nullable=False),  # JSON array
    sa.Column("jkt", sa.String(64)),
    sa.Column("claims", sa.Text, nullable=False),  # JSON object: extra access-token claims
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
    sa.Column("family_issued_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
    sa.Column("access_jti", ExactString(255)),
    sa.Column("access_exp", sa.Double),
)

replay_table = sa.Table(
    "rg_auth_replay",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),  # SHA-256 of the proof key
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
)

_D, _F, _R, _P = denylist_table.c, family_table.c, refresh_table.c, replay_table.c


# -- deny-list ---------------------------------------------------------------------------


class SqlDenyList:
    """A :class:`~riskguard.auth.DenyListStore` on riskguard's SQL tables.

    :param engine: an engine from :func:`riskguard.db.create_engine` whose database has
        riskguard's tables (:func:`riskguard.db.create_schema`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._kind = engine_kind(engine)
        self._lookup = sa.select(sa.literal(1)).where(_D.jti == sa.bindparam("jti")).limit(1)

    def _upsert(self, jti: str, expires_at: float | None) -> Any:
        if self._kind == "mysql":
            ins: Any = mysql.insert(denylist_table).values(jti=jti, expires_at=expires_at)
            new = ins.inserted.expires_at
            greatest = sa.func.greatest(_D.expires_at, new)
        else:
            dialect = postgresql if self._kind == "postgresql" else sqlite
            ins = dialect.insert(denylist_table).values(jti=jti, expires_at=expires_at)
            new = ins.excluded.expires_at
            # SQLite's two-argument max() is its GREATEST.
            greatest = sa.func.max(_D.expires_at, new) if self._kind == "sqlite" else (
                sa.func.greatest(_D.expires_at, new))  # fmt: skip
        # NULL means "for ever" and wins; GREATEST treats NULL differently per engine.
        keep = sa.case((sa.or_(_D.expires_at.is_(None), new.is_(None)), sa.null()),
                       else_=greatest)  # fmt: skip
        if self._kind == "mysql":
            return ins.on_duplicate_key_update(expires_at=keep)
        return ins.on_conflict_do_update(index_elements=[_D.jti], set_={"expires_at": keep})

    def revoke(self, jti: str, *, expires_at: float | None, now: float | None = None) -> None:
        """Refuse ``jti`` until ``expires_at`` (``None``: for ever); nothing is stored when
        ``expires_at`` is not after ``now``. Revoking again keeps the later expiry.

        :raises ValueError: ``jti`` is empty or longer than 255 characters.
        :raises StorageError: the database failed.
        """
        check_jti(jti)
        if expires_at is not None:
            expires_at = float(expires_at)
            if expires_at <= _now(now):
                return
        with map_errors(self.engine, "revoking a token"), write_transaction(self.engine) as conn:
            conn.execute(self._upsert(jti, expires_at))

    def is_revoked(self, jti: str) -> bool:
        """``True`` when ``jti`` is on the list (and not pruned yet).

        :raises StorageError: the database failed (the verifier then refuses the token).
        """
        with map_errors(self.engine, "reading the deny-list"), self.engine.connect() as conn:
            return conn.execute(self._lookup, {"jti": jti}).first() is not None

    def prune(self, *, now: float) -> int:
        """Delete entries whose ``expires_at`` is not after ``now``; return how many.

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "pruning the deny-list"), write_transaction(self.engine) as c:
            return int(c.execute(denylist_table.delete().where(_D.expires_at <= now)).rowcount)


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


# -- refresh tokens ------------------------------------------------------------------------


def _values(rec: RefreshRecord) -> dict[str, Any]:
    return {
        "token_hash": rec.token_hash,
        "family_id": rec.family_id,
        "generation": rec.generation,
        "client_id": rec.client_id,
        "subject": rec.subject,
        "subject_type": rec.subject_type,
        "scope": rec.scope,
        "audience": rec.audience,
        "tenant": rec.tenant,
        "roles": json.dumps(list(rec.roles), separators=(",", ":")),
        "jkt": rec.jkt,
        "claims": json.dumps(dict(rec.claims), separators=(",", ":"), sort_keys=True),
        "issued_at": rec.issued_at,
        "expires_at": rec.expires_at,
        "family_issued_at": rec.family_issued_at,
        "used_at": None,
        "access_jti": rec.access_jti,
        "access_exp": rec.access_exp,
    }


def _record(row: Any, revoked_at: float | None) -> RefreshRecord:
    return RefreshRecord(
        token_hash=row.token_hash,
        family_id=row.family_id,
        generation=int(row.generation),
        client_id=row.client_id,
        subject=row.subject,
        subject_type=row.subject_type,
        scope=row.scope,
        audience=row.audience,
        issued_at=float(row.issued_at),
        expires_at=float(row.expires_at),
        family_issued_at=float(row.family_issued_at),
        tenant=row.tenant,
        roles=tuple(json.loads(row.roles)),
        jkt=row.jkt,
        claims=json.loads(row.claims),
        access_jti=row.access_jti,
        access_exp=None if row.access_exp is None else float(row.access_exp),
        used_at=None if row.used_at is None else float(row.used_at),
        revoked_at=revoked_at,
    )


class SqlRefreshTokenStore:
    """A :class:`~riskguard.auth.RefreshTokenStore` on riskguard's SQL tables.

    :param engine: an engine whose database has riskguard's tables.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, record: RefreshRecord) -> None:
        """Start a new family with its first token.

        :raises StorageError: the family or the token hash exists, or the database failed.
        """
        with (
            map_errors(self.engine, "storing a refresh token"),
            write_transaction(self.engine) as conn,
        ):
            conn.execute(
                family_table.insert().values(
                    family_id=record.family_id,
                    client_id=record.client_id,
                    subject=record.subject,
                    created_at=record.family_issued_at,
                    expires_at=record.expires_at,
                )
            )
            conn.execute(refresh_table.insert().values(_values(record)))

    def get(self, token_hash: str) -> RefreshRecord | None:
        """The record of ``token_hash`` with its state, or ``None``.

        :raises StorageError: the database failed.
        """
        q = (
            sa.select(refresh_table, _F.revoked_at.label("family_revoked_at"))
            .join(family_table, _F.family_id == _R.family_id)
            .where(_R.token_hash == token_hash)
        )
        with map_errors(self.engine, "reading a refresh token"), self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        revoked = None if row.family_revoked_at is None else float(row.family_revoked_at)
        return _record(row, revoked)

    @staticmethod
    def _access(conn: Connection, family_id: str, now: float) -> tuple[AccessTokenRef, ...]:
        # A locking read: under MariaDB's REPEATABLE READ a plain SELECT would read the
        # transaction's snapshot and could miss a successor committed while we waited for
        # the family lock.
        rows = conn.execute(
            sa.select(_R.access_jti, _R.access_exp)
            .where(
                _R.family_id == family_id,
                _R.access_jti.is_not(None),
                _R.access_exp > now - MAX_LEEWAY,
            )
            .with_for_update(read=True)
        ).all()
        return tuple(AccessTokenRef(r.access_jti, float(r.access_exp)) for r in rows)

    @staticmethod
    def _lock_family(conn: Connection, family_id: str) -> Any:
        return conn.execute(
            sa.select(_F.revoked_at, _F.expires_at)
            .where(_F.family_id == family_id)
            .with_for_update()
        ).first()

    def rotate(self, token_hash: str, successor: RefreshRecord, *, now: float) -> RotateResult:
        """Use ``token_hash`` and store ``successor`` in one transaction (see the Protocol).

        :raises ValueError: ``successor`` is not the next generation of the token's family.
        :raises StorageError: the database failed; nothing changed.
        """
        with (
            map_errors(self.engine, "rotating a refresh token"),
            write_transaction(self.engine) as conn,
        ):
            row = conn.execute(sa.select(refresh_table).where(_R.token_hash == token_hash)).first()
            if row is None:
                return RotateResult("unknown")
            rec = _record(row, None)
            check_successor(rec, successor)
            fam = self._lock_family(conn, rec.family_id)
            if fam is None:
                return RotateResult("unknown")
            revoked = None if fam.revoked_at is None else float(fam.revoked_at)
            rec = _record(row, revoked)
            if rec.expires_at <= now:
                return RotateResult("expired", rec)
            if revoked is not None:
                return RotateResult("revoked", rec, self._access(conn, rec.family_id, now))
            consumed = conn.execute(
                refresh_table.update()
                .where(_R.token_hash == token_hash, _R.used_at.is_(None))
                .values(used_at=now)
            ).rowcount
            if consumed == 1:
                conn.execute(refresh_table.insert().values(_values(successor)))
                if successor.expires_at > float(fam.expires_at):
                    conn.execute(
                        family_table.update()
                        .where(_F.family_id == rec.family_id)
                        .values(expires_at=successor.expires_at)
                    )
                return RotateResult("rotated", rec)
            conn.execute(
                family_table.update()
                .where(_F.family_id == rec.family_id)
                .values(revoked_at=now, revoke_reason="reuse")
            )
            return RotateResult("reused", rec, self._access(conn, rec.family_id, now))

    def revoke_family(
        self, family_id: str, *, now: float, reason: str
    ) -> tuple[AccessTokenRef, ...] | None:
        """Revoke a family (idempotent); its possibly live access tokens, or ``None``.

        :raises StorageError: the database failed.
        """
        with (
            map_errors(self.engine, "revoking a refresh-token family"),
            write_transaction(self.engine) as conn,
        ):
            fam = self._lock_family(conn, family_id)
            if fam is None:
                return None
            if fam.revoked_at is None:
                conn.execute(
                    family_table.update()
                    .where(_F.family_id == family_id)
                    .values(revoked_at=now, revoke_reason=reason[:32])
                )
            return self._access(conn, family_id, now)

    def prune(self, *, now: float) -> int:
        """Delete tokens that expired before ``now`` and families with no live token;
        return how many tokens.

        :raises StorageError: the database failed.
        """
        with (
            map_errors(self.engine, "pruning refresh tokens"),
            write_transaction(self.engine) as conn,
        ):
            gone = conn.execute(refresh_table.delete().where(_R.expires_at <= now)).rowcount
            conn.execute(family_table.delete().where(_F.expires_at <= now))
            return int(gone)


# -- DPoP replay cache ---------------------------------------------------------------------


class SqlReplayCache:
    """A :class:`~riskguard.auth.ReplayCache` on riskguard's SQL tables, shared by every
    process on the database. Keys are stored as their SHA-256.

    :param engine: an engine whose database has riskguard's tables.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``; ``False`` when it is there and unexpired.

        :raises StorageError: the database failed.
        """
        if expires_at <= now:
            return True  # already stale: it could never block a later proof
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        with map_errors(self.engine, "recording a DPoP proof id"):
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        replay_table.insert().values(key_hash=digest, expires_at=expires_at)
                    )
                return True
            except IntegrityError:
                pass
            # Present: take it over only if it has expired (compare-and-set on expires_at).
            with write_transaction(self.engine) as conn:
                taken = conn.execute(
                    replay_table.update()
                    .where(_P.key_hash == digest, _P.expires_at <= now)
                    .values(expires_at=expires_at)
                ).rowcount
            return bool(taken == 1)

    def prune(self, *, now: float) -> int:
        """Delete ids whose window closed by ``now``; return how many.

        :raises StorageError: the database failed.
        """
        with map_errors(self.engine, "pruning DPoP proof ids"), write_transaction(self.engine) as c:
            return int(c.execute(replay_table.delete().where(_P.expires_at <= now)).rowcount)
