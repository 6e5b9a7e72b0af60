"""Policy lines in riskguard's database: table ``rg_access_policy``, one row a line.

The row layout is Casbin's ``CasbinRule`` (``ptype``, ``v0`` … ``v5``) with the policy's
``name`` and the line's ``position`` in front, so several policies share the table and a
decision or an error points at ``sql:default:12`` as it would at ``policy.csv:12``.
``rg_access_policy_version`` holds one row per policy whose ``version`` every
:meth:`SqlPolicy.replace` bumps in the same transaction: the cheap change marker the
watcher polls (:meth:`SqlPolicy.marker`).

Names and values are compared byte for byte on every engine (MariaDB's default collation
would make ``Default`` and ``default`` one policy).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from riskguard.access._lines import FilePolicy, PolicyLine, split_tokens
from riskguard.access._model import ModelDef
from riskguard.access._snapshot import check_lines
from riskguard.db import ExactString, engine_kind, map_errors, metadata, write_transaction
from riskguard.errors import PolicyError

__all__ = ["MAX_FIELDS", "SqlPolicy", "policy_table", "version_table"]

#: Values a row holds after its ``ptype`` (Casbin's ``v0`` … ``v5``).
MAX_FIELDS = 6
_VALUE_LEN = 255
_PTYPE_LEN = 32
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_V = tuple(f"v{i}" for i in range(MAX_FIELDS))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

policy_table = sa.Table(
    "rg_access_policy",
    metadata,
    sa.Column("name", ExactString(64), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ptype", ExactString(_PTYPE_LEN), nullable=False),
    *(sa.Column(v, ExactString(_VALUE_LEN), nullable=True) for v in _V),
)

version_table = sa.Table(
    "rg_access_policy_version",
    metadata,
    sa.Column("name", ExactString(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("rules_hash", sa.String(71), nullable=False),  # sha256:<hex> of the lines
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

_P, _S = policy_table.c, version_table.c


def _rules_hash(lines: Sequence[PolicyLine]) -> str:
    # The lines alone (no model): what `pull --json` shows and what a marker compares.
    h = hashlib.sha256()
    for pl in lines:
        h.update("\x1f".join((pl.ptype, *pl.values)).encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


class SqlPolicy:
    """A :class:`~riskguard.access.PolicySource` on riskguard's database.

    ::

        store = SqlPolicy(guard.engine)               # the policy named "default"
        store.import_csv("policies/policy.csv", model=read_model("policies/model.conf"))
        ac = AccessControl("policies/model.conf", store, audit=guard.audit)

    Lines load in ``position`` order as ``PolicyLine(source="sql:<name>", line=position)``.
    Write with :meth:`replace` (one transaction, checked first), never row by row: the
    version it bumps is how watchers see the change.

    :param engine: an engine whose database has riskguard's tables
        (:func:`riskguard.db.create_schema`).
    :param name: the policy's name in the table (letters, digits, ``_.-``; up to 64).
    :raises ValueError: the name is empty, too long or has other characters.
    """

    def __init__(self, engine: Engine, *, name: str = "default") -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"policy name {name!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
            )
        self.engine = engine
        self.name = name
        self._kind = engine_kind(engine)

    @property
    def source(self) -> str:
        """``sql:<name>``: the ``source`` of every line this store loads."""
        return f"sql:{self.name}"

    def __repr__(self) -> str:
        return f"SqlPolicy({self.engine.url.get_backend_name()}, name={self.name!r})"

    # -- reading ------------------------------------------------------------------------

    def load(self) -> list[PolicyLine]:
        """Every line of the policy in ``position`` order (one consistent read).

        :raises PolicyError: no policy of this name is stored, or a row is malformed
            (``sql:<name>:<position>`` named).
        :raises StorageError: the database failed or has no ``rg_access_policy`` table.
        """
        q = sa.select(policy_table).where(_P.name == self.name).order_by(_P.position)
        with map_errors(self.engine, "reading the access policy"), self.engine.connect() as c:
            rows = c.execute(q).all()
        if not rows:
            raise PolicyError(
                f"no access policy named {self.name!r} is stored",
                path=self.source,
                hint="store one with `riskguard policy push` (or SqlPolicy.replace)",
            )
        return [self._line(row) for row in rows]

    def _line(self, row: Any) -> PolicyLine:
        raw = [getattr(row, v) for v in _V]
        n = next((i for i, v in enumerate(raw) if v is None), MAX_FIELDS)
        if any(v is not None for v in raw[n:]):
            raise PolicyError(
                f"v{n} is NULL but a later column is not: a row's values must be contiguous",
                path=self.source,
                line=int(row.position),
            )
        return PolicyLine(row.ptype, tuple(raw[:n]), self.source, int(row.position))

    def marker(self) -> str | None:
        """A token that changes whenever :meth:`replace` stores a policy: ``version:hash``,
        or ``None`` when nothing is stored under this name. One primary-key read.

        :raises StorageError: the database failed.
        """
        q = sa.select(_S.version, _S.rules_hash).where(_S.name == self.name)
        with (
            map_errors(self.engine, "reading the access policy version"),
            self.engine.connect() as c,
        ):
            row = c.execute(q).first()
        return None if row is None else f"{row.version}:{row.rules_hash}"

    def version(self) -> int:
        """How many times a policy was stored under this name (0: never).

        :raises StorageError: the database failed.
        """
        marker = self.marker()
        return 0 if marker is None else int(marker.partition(":")[0])

    # -- writing ------------------------------------------------------------------------

    def check(
        self, lines: Iterable[PolicyLine], *, model: ModelDef | None = None
    ) -> list[PolicyLine]:
        """The lines as :meth:`load` would return them after :meth:`replace`, checked.

        Every line must fit the table (a ``ptype`` and at most six values, each up to 255
        characters) and be writable as a Casbin CSV line again (no control characters, no
        surrounding spaces, no comma outside brackets), so that ``pull`` then ``push``
        stores the same policy. With ``model``, the lines are also checked as an enforcer
        loading them would (types, field counts, effects, role cycles, at least one rule).

        :raises PolicyError: naming ``sql:<name>:<position>``; the hint names the line's
            own origin (``policy.csv:9``) when it has one.
        """
        given = list(lines)
        out = [
            PolicyLine(pl.ptype, tuple(pl.values), self.source, n) for n, pl in enumerate(given, 1)
        ]
        for pl, orig in zip(out, given, strict=True):
            problem = _shape_problem(pl)
            if problem is not None:
                raise self._error(problem, pl.line, orig)
        if not out:
            raise PolicyError("the policy has no lines", path=self.source)
        if model is not None:
            try:
                check_lines(model, out)
            except PolicyError as exc:
                origin = given[exc.line - 1] if exc.line and exc.path == self.source else None
                raise self._error(exc.message, exc.line, origin, exc.hint) from None
        return out

    def _error(
        self, message: str, line: int | None, origin: PolicyLine | None, hint: str | None = None
    ) -> PolicyError:
        notes = [hint] if hint else []
        if origin is not None and (origin.line or origin.source != "<memory>"):
            notes.append(f"from {origin.location}")
        return PolicyError(message, path=self.source, line=line, hint="; ".join(notes) or None)

    def replace(self, lines: Iterable[PolicyLine], *, model: ModelDef | None = None) -> int:
        """Store ``lines`` as this policy in one transaction (the old lines go, positions
        become 1, 2, 3 … in the given order) and bump its version.

        Everything is checked first (see :meth:`check`; pass the ``model`` the enforcers
        load to check what they will): an invalid policy is never written, and readers
        see the old lines or the new ones, never a mix. Concurrent writers serialise on
        the policy's version row.

        :returns: the new version.
        :raises PolicyError: a line is invalid; nothing was written.
        :raises StorageError: the database failed; nothing was written.
        """
        checked = self.check(lines, model=model)
        rows = [
            {"name": self.name, "position": pl.line, "ptype": pl.ptype}
            | {v: pl.values[i] if i < len(pl.values) else None for i, v in enumerate(_V)}
            for pl in checked
        ]
        digest = _rules_hash(checked)
        with (
            map_errors(self.engine, "storing the access policy"),
            write_transaction(self.engine) as conn,
        ):
            current = self._lock_version(conn)
            conn.execute(policy_table.delete().where(_P.name == self.name))
            conn.execute(policy_table.insert(), rows)
            conn.execute(
                version_table.update()
                .where(_S.name == self.name)
                .values(
                    version=current + 1,
                    rules_hash=digest,
                    lines=len(rows),
                    updated_at=time.time(),
                )
            )
        return current + 1

    def _lock_version(self, conn: Connection) -> int:
        """Make sure the version row exists, lock it, return its version."""
        values = {
            "name": self.name,
            "version": 0,
            "rules_hash": "",
            "lines": 0,
            "updated_at": time.time(),
        }
        ins: Any
        if self._kind == "mysql":
            ins = mysql.insert(version_table).values(values)
            ins = ins.on_duplicate_key_update(name=ins.inserted.name)
        else:
            dialect = postgresql if self._kind == "postgresql" else sqlite
            ins = dialect.insert(version_table).values(values).on_conflict_do_nothing()
        conn.execute(ins)
        return int(
            conn.execute(
                sa.select(_S.version).where(_S.name == self.name).with_for_update()
            ).scalar_one()
        )

    def import_csv(self, path: str | Path, *, model: ModelDef | None = None) -> int:
        """Store a Casbin policy CSV file as this policy, lines in file order (see
        :meth:`replace`).

        :returns: the new version.
        :raises PolicyError: the file cannot be read or a line is invalid; nothing written.
        :raises StorageError: the database failed; nothing was written.
        """
        return self.replace(FilePolicy(path).load(), model=model)

    def dump(self) -> str:
        """The stored policy as Casbin CSV text: line *n* is position *n*.

        :raises PolicyError: no policy of this name is stored.
        :raises StorageError: the database failed.
        """
        return "".join(f"{pl}\n" for pl in self.load())


def _shape_problem(pl: PolicyLine) -> str | None:
    if not pl.ptype or len(pl.ptype) > _PTYPE_LEN or not _token_ok(pl.ptype):
        return f"invalid policy type {pl.ptype!r} (a name such as p or g, up to {_PTYPE_LEN})"
    if pl.ptype.startswith("#"):
        return f"invalid policy type {pl.ptype!r}: a CSV line starting with '#' is a comment"
    if len(pl.values) > MAX_FIELDS:
        return (
            f"{pl.ptype} line has {len(pl.values)} fields; the table holds at most "
            f"{MAX_FIELDS} (v0 to v5)"
        )
    for i, value in enumerate(pl.values):
        if not isinstance(value, str):
            return f"v{i} is a {type(value).__name__}, not a string"
        if len(value) > _VALUE_LEN:
            return f"v{i} is {len(value)} characters long; the table holds {_VALUE_LEN}"
        if not _token_ok(value):
            return (
                f"v{i} cannot be written as one Casbin CSV field (a control character, "
                "surrounding spaces, an unbalanced bracket or a comma outside brackets)"
            )
    return None


def _token_ok(value: str) -> bool:
    """``value`` reads back from a CSV line as itself: Casbin strips tokens, splits at
    commas outside brackets, and an unclosed bracket would swallow the next commas."""
    if _CONTROL.search(value) or value != value.strip():
        return False
    depth = 0
    for c in value:
        depth += (c in "[(") - (c in "])")
        if depth < 0:
            return False
    return depth == 0 and split_tokens(value) == [value]
