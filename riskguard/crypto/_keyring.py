"""The keyring: data keys (DEKs) wrapped by a provider's KEK, in riskguard's tables.

A *keyset* is a named sequence of key versions (``field:customer.phone``,
``subject:u-1001``, ``index:blind``). Each version is in one state::

    add_version ──► decrypt_only ──promote──► primary ──(next promote)──► decrypt_only
                                                              retire ──► disabled
                                                             destroy ──► destroyed

``primary`` encrypts; ``decrypt_only`` decrypts; ``disabled`` refuses (``check="key"``) and
raises ``min_decryption_version``; ``destroyed`` has lost its wrapped bytes for good. A
subject's keyset is shredded whole: its versions are destroyed and reads raise
:class:`~riskguard.errors.ShreddedError`.

No provider call on the hot path: an unwrapped key is kept for ``cache_ttl_s`` seconds
(monotonic clock), and the primary version of a keyset for as long, so a promotion made by
another process is used within that time (retiring the old version waits it out).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from loguru import logger
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from riskguard.crypto._format import key_prefix
from riskguard.crypto._providers import KekDestroyed, KeyProvider, wrapped_kek_id
from riskguard.crypto._tables import key_table, keyset_table
from riskguard.db import map_errors, meta_table, write_transaction
from riskguard.errors import DecryptionError, KeyManagementError, ShreddedError
from riskguard.types import AuditRecorder, ResourceRef

__all__ = ["DataKey", "KeyVersionInfo", "Keyring", "KeysetInfo", "ShredReport"]

_log = logger.bind(component="crypto")
_STATES = ("primary", "decrypt_only", "disabled", "destroyed")
_KINDS = ("field", "subject", "index")
_REWRAP_BATCH = 500
_MAX_ID = 2**31 - 1
_MAX_CACHED = 100_000
_SUBJECT_KEK_META = "crypto.subject_kek"


def ensure_meta_row(engine: Engine) -> None:
    """Insert the keyring's lock row (``rg_meta`` key ``crypto.subject_kek``) if missing."""
    from riskguard.crypto._tables import ensure_lock_row

    ensure_lock_row(engine, _SUBJECT_KEK_META)


@dataclass(slots=True, eq=False)
class DataKey:
    """An unwrapped data key version, ready to use. ``prefix`` is the ciphertext header's
    first 9 bytes for it; ``material`` is kept only for index keys (HKDF roots)."""

    keyset_id: int
    version: int
    name: str
    kind: str
    subject: str | None
    state: str
    aead: AESGCM
    prefix: bytes
    material: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    """One version of a keyset, without key material."""

    version: int
    state: str
    kek_id: str | None
    created_at: int
    changed_at: int


@dataclass(frozen=True, slots=True)
class KeysetInfo:
    """A keyset and its versions, without key material."""

    id: int
    name: str
    kind: str
    subject: str | None
    state: str
    primary_version: int | None
    min_decryption_version: int
    created_at: int
    rotated_at: int
    versions: tuple[KeyVersionInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class ShredReport:
    """What :meth:`Keyring.shred` did. ``backups_protected`` is true when the subject KEK
    was rotated and the old one destroyed, so no database backup can unwrap the key."""

    subject: str
    keyset_id: int
    versions_destroyed: int
    backups_protected: bool
    rewrapped: int


def subject_keyset(subject: str) -> str:
    """The keyset name of a data subject's key."""
    if not subject:
        raise ValueError("a subject id must not be empty")
    return "subject:" + subject


class Keyring:
    """Data keys for riskguard's field cipher, blind indexes and subjects.

    :param engine: the database holding ``rg_crypto_*`` (riskguard's engine).
    :param provider: the KEK holder that wraps every data key.
    :param audit: where ``key.*`` lifecycle events go.
    :param cache_ttl_s: how long an unwrapped key and a keyset's primary are reused.
    :param clock: monotonic seconds (tests pass a fake); ``wall``: epoch seconds.
    """

    def __init__(
        self,
        engine: Engine,
        provider: KeyProvider,
        *,
        audit: AuditRecorder | None = None,
        cache_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.audit = audit
        self.cache_ttl_s = float(cache_ttl_s)
        self._clock = clock
        self._wall = wall
        # A refusal is cached as the error's arguments: each raise gets a fresh exception.
        self._keys: dict[tuple[int, int], tuple[float, DataKey | _Refusal]] = {}
        self._primaries: dict[str, tuple[float, DataKey]] = {}
        #: Bumped whenever this process changes or forgets keys: field ciphers that keep
        #: their own fast-path copies compare it on each use.
        self.generation = 0
        self._meta_ok = False

    # -- hot path ----------------------------------------------------------------------

    def primary(self, name: str, *, kind: str = "field", create: bool = True) -> DataKey:
        """The key that encrypts for keyset ``name`` now (created on first use).

        :raises ShreddedError: the keyset is a shredded subject's.
        :raises KeyManagementError: the keyset has no primary, or the KEK cannot unwrap.
        """
        return self.primary_entry(name, kind=kind, create=create)[1]

    def primary_entry(
        self, name: str, *, kind: str = "field", create: bool = True
    ) -> tuple[float, DataKey]:
        """:meth:`primary` with the monotonic time its cache entry expires: copies kept
        elsewhere (the field cipher's fast path) must not outlive it."""
        hit = self._primaries.get(name)
        if hit is not None and hit[0] > self._clock():
            return hit
        return self._load_primary(name, kind, create)

    def key_entry(self, keyset_id: int, version: int) -> tuple[float, DataKey]:
        """:meth:`key` with the monotonic time its cache entry expires."""
        hit = self._keys.get((keyset_id, version))
        if hit is None or hit[0] <= self._clock():
            hit = self._load_key(keyset_id, version)
        value = hit[1]
        if isinstance(value, _Refusal):
            raise value.error()
        return hit[0], value

    def key(self, keyset_id: int, version: int) -> DataKey:
        """The key a ciphertext names, for decryption.

        :raises ShreddedError: it belongs to a shredded subject.
        :raises DecryptionError: ``check="key"``: no such key, retired (disabled or below
            ``min_decryption_version``) or destroyed.
        """
        return self.key_entry(keyset_id, version)[1]

    def subject_key(self, subject: str, *, create: bool = True) -> DataKey:
        """The primary key of a data subject (created on their first write), for a write.

        The keyset's state is read from the table on every call (the key itself comes from
        the cache): a subject shredded by another process gets no new data from this one.
        """
        return self._load_primary(subject_keyset(subject), "subject", create)[1]

    def invalidate(self) -> None:
        """Forget every cached key (the next use reads the tables again)."""
        self._keys.clear()
        self._primaries.clear()
        self.generation += 1

    # -- loading -----------------------------------------------------------------------

    def _expiry(self) -> float:
        return self._clock() + self.cache_ttl_s

    def _load_key(self, keyset_id: int, version: int) -> tuple[float, DataKey | _Refusal]:
        k, s = key_table.c, keyset_table.c
        q = (
            sa.select(
                s.name, s.kind, s.subject, s.state, s.min_decryption_version,
                k.state, k.wrapped, k.kek_id,
            )
            .select_from(key_table.join(keyset_table, k.keyset_id == s.id))
            .where(k.keyset_id == keyset_id, k.version == version)
        )  # fmt: skip
        if not (0 < keyset_id <= _MAX_ID and 0 < version <= _MAX_ID):
            # Ids are SQL INTEGERs: a larger one in a header names no key that can exist.
            return (self._expiry(), _Refusal(
                f"no key version {version} in keyset {keyset_id}: a foreign or damaged ciphertext"
            ))  # fmt: skip
        value: DataKey | _Refusal
        for attempt in (1, 2):
            with map_errors(self.engine, "reading a data key"), self.engine.connect() as conn:
                row = conn.execute(q).first()
            if row is None:
                value = _Refusal(
                    f"no key version {version} in keyset {keyset_id}: a foreign ciphertext, "
                    "or the keys were not restored",
                    check="key",
                    hint="restore the keys with `riskguard keys import` if this is a restored "
                    "backup",
                )
                break
            name, kind, subject, ks_state, min_dec, state, wrapped, _kek = row
            try:
                value = self._usable(keyset_id, version, name, kind, subject, ks_state, state,
                                     min_dec, wrapped)  # fmt: skip
                break
            except KekDestroyed:
                # Read just before a subject-KEK rotation re-wrapped the row and destroyed
                # the old KEK: read the row again. Still under a destroyed KEK: erased.
                if attempt == 2 and kind == "subject":
                    value = _SHREDDED
                elif attempt == 2:
                    raise
        entry = (self._expiry(), value)
        if len(self._keys) >= _MAX_CACHED:
            self._keys.clear()  # bounded memory: one entry per subject ever touched adds up
        self._keys[(keyset_id, version)] = entry
        return entry

    def _usable(
        self,
        keyset_id: int,
        version: int,
        name: str,
        kind: str,
        subject: str | None,
        ks_state: str,
        state: str,
        min_dec: int,
        wrapped: bytes | None,
    ) -> DataKey | _Refusal:
        if ks_state == "shredded" or (kind == "subject" and state == "destroyed"):
            return _SHREDDED
        if state == "destroyed" or wrapped is None:
            return _Refusal(f"key version {version} of {name} was destroyed", check="key")
        if state == "disabled" or version < min_dec:
            return _Refusal(
                f"key version {version} of {name} is retired (disabled, or below "
                f"min_decryption_version {min_dec})",
                check="key",
                hint="a retired version decrypts nothing; `riskguard keys rewrap` moves rows off "
                "a version before it is retired",
            )
        raw = self.provider.unwrap(bytes(wrapped), context=_wrap_context(keyset_id, version))
        return self._data_key(keyset_id, version, name, kind, subject, state, raw)

    @staticmethod
    def _data_key(
        keyset_id: int,
        version: int,
        name: str,
        kind: str,
        subject: str | None,
        state: str,
        raw: bytes,
    ) -> DataKey:
        return DataKey(
            keyset_id, version, name, kind, subject, state, AESGCM(raw),
            key_prefix(keyset_id, version), raw if kind == "index" else None,
        )  # fmt: skip

    def _load_primary(self, name: str, kind: str, create: bool) -> tuple[float, DataKey]:
        s = keyset_table.c
        q = sa.select(s.id, s.primary_version, s.state).where(s.name == name)
        with map_errors(self.engine, "reading a keyset"), self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            if not create:
                raise KeyManagementError(f"no keyset {name!r}", key_id=name)
            self.create(name, kind=kind, if_missing=True)
            with map_errors(self.engine, "reading a keyset"), self.engine.connect() as conn:
                row = conn.execute(q).first()
            assert row is not None  # created above, in its own transaction
        keyset_id, version, state = row
        if state == "shredded":
            raise ShreddedError()
        if version is None:
            raise KeyManagementError(f"keyset {name!r} has no primary version", key_id=name)
        hit = self._keys.get((keyset_id, version))
        if hit is None or hit[0] <= self._clock() or isinstance(hit[1], _Refusal):
            hit = self._load_key(keyset_id, version)  # a cached refusal may be stale
        key = hit[1]
        if isinstance(key, _Refusal):
            raise key.error()
        entry = (self._expiry(), key)
        if kind != "subject":
            self._primaries[name] = entry
        return entry

    # -- lifecycle ---------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._wall())

    def create(self, name: str, *, kind: str = "field", if_missing: bool = False) -> KeysetInfo:
        """Create keyset ``name`` with version 1 as primary. Audited as ``key.create``.

        :param if_missing: return the existing keyset instead of failing (two processes
            creating the same keyset on first use both succeed).
        :raises KeyManagementError: it exists (and ``if_missing`` is false), or bad kind.
        """
        if kind not in _KINDS:
            raise KeyManagementError(f"unknown keyset kind {kind!r} (one of {', '.join(_KINDS)})")
        if not name or len(name) > 255:
            raise KeyManagementError("a keyset name must be 1 to 255 characters", key_id=name)
        subject = name.removeprefix("subject:") if kind == "subject" else None
        if kind == "subject":
            self.ensure_schema()
        now = self._now()
        try:
            with (
                map_errors(self.engine, "creating a keyset"),
                write_transaction(self.engine) as conn,
            ):
                keyset_id = conn.execute(
                    keyset_table.insert().values(
                        name=name,
                        kind=kind,
                        subject=subject,
                        primary_version=1,
                        min_decryption_version=1,
                        state="active",
                        created_at=now,
                        rotated_at=now,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                self._insert_version(conn, keyset_id, 1, "primary", kind, now)
        except Exception as exc:
            if not _is_duplicate(exc):
                raise
            if if_missing:
                return self.describe(name)
            raise KeyManagementError(f"keyset {name!r} exists", key_id=name) from None
        self._record("key.create", name, {"version": 1, "kind": kind}, subject)
        _log.info("keyset {} created ({})", keyset_id, kind)
        return self.describe(name)

    def _insert_version(
        self, conn: Connection, keyset_id: int, version: int, state: str, kind: str, now: int
    ) -> None:
        purpose = "subject" if kind == "subject" else "data"
        raw = os.urandom(32)
        recorded = self._subject_kek(conn, exclusive=False) if kind == "subject" else ""
        wrapped = self.provider.wrap(
            raw, context=_wrap_context(keyset_id, version), purpose=purpose
        )
        if recorded and _kek_id(wrapped) != recorded:
            # This process's view of the provider is older than the last subject-KEK
            # rotation: a key wrapped now would be lost when that rotation destroys its KEK.
            raise KeyManagementError(
                "the subject KEK was rotated by another process; this one still wraps under "
                "an older KEK",
                key_id=_kek_id(wrapped),
                hint="retry; the provider re-reads its keyring (a long-lived provider object "
                "may need to be rebuilt)",
            )
        conn.execute(
            key_table.insert().values(
                keyset_id=keyset_id, version=version, state=state,
                kek_id=_kek_id(wrapped), wrapped=wrapped, created_at=now, changed_at=now,
            )
        )  # fmt: skip

    @contextmanager
    def _locked(self, name: str, what: str) -> Iterator[tuple[Connection, Any]]:
        """A write transaction with keyset ``name``'s row locked."""
        with map_errors(self.engine, what), write_transaction(self.engine) as conn:
            row = conn.execute(
                sa.select(keyset_table).where(keyset_table.c.name == name).with_for_update()
            ).first()
            if row is None:
                raise KeyManagementError(f"no keyset {name!r}", key_id=name)
            yield conn, row

    def add_version(self, name: str) -> int:
        """Stage a new version (``decrypt_only``): every process can read with it before
        :meth:`promote` makes it encrypt. Audited as ``key.create``.

        :returns: the new version number.
        """
        if name.startswith("subject:"):
            self.ensure_schema()
        with self._locked(name, "adding a key version") as (conn, ks):
            if ks.state == "shredded":
                raise ShreddedError()
            top = conn.execute(
                sa.select(sa.func.max(key_table.c.version)).where(key_table.c.keyset_id == ks.id)
            ).scalar_one()
            version = int(top or 0) + 1
            self._insert_version(conn, ks.id, version, "decrypt_only", ks.kind, self._now())
        self._record("key.create", name, {"version": version, "kind": ks.kind}, ks.subject)
        return version

    def promote(self, name: str, version: int) -> None:
        """Make ``version`` the primary; the old primary becomes ``decrypt_only``.
        Audited as ``key.rotate``.

        :raises KeyManagementError: no such version, or it is disabled or destroyed.
        """
        now = self._now()
        with self._locked(name, "promoting a key version") as (conn, ks):
            state = self._version_state(conn, ks.id, version, name)
            if state not in ("decrypt_only", "primary"):
                raise KeyManagementError(
                    f"version {version} of {name!r} is {state}; only a decrypt_only version "
                    "can be promoted",
                    key_id=name,
                )
            previous = ks.primary_version
            if previous == version:
                return
            k = key_table.c
            if previous is not None:
                conn.execute(
                    key_table.update()
                    .where(k.keyset_id == ks.id, k.version == previous)
                    .values(state="decrypt_only", changed_at=now)
                )
            conn.execute(
                key_table.update()
                .where(k.keyset_id == ks.id, k.version == version)
                .values(state="primary", changed_at=now)
            )
            conn.execute(
                keyset_table.update()
                .where(keyset_table.c.id == ks.id)
                .values(primary_version=version, rotated_at=now)
            )
        self._primaries.pop(name, None)
        self._forget(ks.id)
        self._record("key.rotate", name, {"version": version, "previous": previous}, ks.subject)

    def rotate(self, name: str) -> int:
        """Add a version and promote it (both audited). :returns: the new primary version."""
        version = self.add_version(name)
        self.promote(name, version)
        return version

    def retire(self, name: str, version: int, *, remaining: int, now: float | None = None) -> None:
        """Disable ``version``: it decrypts nothing from now on, and
        ``min_decryption_version`` rises past it when no lower version is usable.
        Audited as ``key.retire``.

        :param remaining: rows still encrypted under ``version`` (``riskguard keys rewrap``
            reports them); must be 0.
        :raises KeyManagementError: rows remain, the version is the primary, or the primary
            was promoted less than ``cache_ttl_s`` ago (other processes may still encrypt
            with the old version until their cache expires).
        """
        if remaining:
            raise KeyManagementError(
                f"{remaining} rows are still encrypted under version {version} of {name!r}",
                key_id=name,
                hint="run `riskguard keys rewrap` first",
            )
        t = self._wall() if now is None else now
        with self._locked(name, "retiring a key version") as (conn, ks):
            state = self._version_state(conn, ks.id, version, name)
            if state == "primary":
                raise KeyManagementError(
                    f"version {version} of {name!r} is the primary", key_id=name,
                    hint="promote another version first (`riskguard keys rotate`)",
                )  # fmt: skip
            wait = ks.rotated_at + self.cache_ttl_s - t
            if wait > 0:
                raise KeyManagementError(
                    f"the primary of {name!r} was promoted {int(t - ks.rotated_at)} s ago; other "
                    f"processes may encrypt under older versions for {int(wait)} s more",
                    key_id=name,
                    hint="retry after the data-key cache TTL ([keys] dek_cache_ttl_s)",
                )
            if state in ("disabled", "destroyed"):
                return
            k = key_table.c
            conn.execute(
                key_table.update()
                .where(k.keyset_id == ks.id, k.version == version)
                .values(state="disabled", changed_at=int(t))
            )
            usable = conn.execute(
                sa.select(sa.func.min(k.version)).where(
                    k.keyset_id == ks.id, k.state.in_(("primary", "decrypt_only"))
                )
            ).scalar_one()
            conn.execute(
                keyset_table.update()
                .where(keyset_table.c.id == ks.id)
                .values(min_decryption_version=max(ks.min_decryption_version, int(usable)))
            )
        self._forget(ks.id)
        self._record("key.retire", name, {"version": version}, ks.subject)

    def destroy(self, name: str, version: int) -> None:
        """Erase a *disabled* version's wrapped bytes for good. Audited as ``key.destroy``.

        :raises KeyManagementError: the version is not disabled (retire it first).
        """
        with self._locked(name, "destroying a key version") as (conn, ks):
            state = self._version_state(conn, ks.id, version, name)
            if state == "destroyed":
                return
            if state != "disabled":
                raise KeyManagementError(
                    f"version {version} of {name!r} is {state}; retire it before destroying",
                    key_id=name,
                )
            k = key_table.c
            conn.execute(
                key_table.update()
                .where(k.keyset_id == ks.id, k.version == version)
                .values(state="destroyed", wrapped=None, changed_at=self._now())
            )
        self._forget(ks.id)
        self._record("key.destroy", name, {"version": version}, ks.subject)

    @staticmethod
    def _version_state(conn: Connection, keyset_id: int, version: int, name: str) -> str:
        k = key_table.c
        state = conn.execute(
            sa.select(k.state).where(k.keyset_id == keyset_id, k.version == version)
        ).scalar_one_or_none()
        if state is None:
            raise KeyManagementError(f"no version {version} of {name!r}", key_id=name)
        return str(state)

    def _forget(self, keyset_id: int) -> None:
        self.generation += 1
        for key in [k for k in self._keys if k[0] == keyset_id]:
            self._keys.pop(key, None)
        for name in [n for n, (_, dk) in self._primaries.items() if dk.keyset_id == keyset_id]:
            self._primaries.pop(name, None)

    # -- subjects ----------------------------------------------------------------------

    def shred(self, subject: str, *, protect_backups: bool = True) -> ShredReport:
        """Crypto-shred a data subject: destroy every version of their key (the wrapped
        bytes are deleted, not marked) and mark the keyset shredded, so later reads raise
        :class:`ShreddedError` and writes for that subject id are refused (writes read the
        keyset's state each time; reads in other processes stop within the cache TTL).
        Audited as ``key.shred``. A subject with no key yet gets a shredded tombstone.

        With ``protect_backups`` the provider's subject KEK is rotated, every other
        subject's key re-wrapped under the new one, and the old KEK destroyed (see
        :meth:`rotate_subject_kek`): a database backup taken before the shred then holds
        the subject's key wrapped under a KEK that no longer exists.
        """
        return self.shred_many([subject], protect_backups=protect_backups)[0]

    def shred_many(
        self,
        subjects: list[str],
        *,
        protect_backups: bool = True,
        after_destroy: Callable[[], None] | None = None,
    ) -> list[ShredReport]:
        """:meth:`shred` for several subjects with one subject-KEK rotation (each
        rotation re-wraps every live subject key: batch erasure requests).

        :param after_destroy: called once the keys are destroyed and before the KEK
            rotation (:meth:`FieldCrypto.shred` clears blind indexes there).
        """
        destroyed: list[tuple[str, int, int]] = []
        rewrapped = 0
        protected = False
        try:
            for subject in subjects:
                destroyed.append((subject, *self._destroy_subject(subject)))
            if after_destroy is not None:
                after_destroy()
            if protect_backups and destroyed:
                try:
                    rewrapped = self.rotate_subject_kek()
                    protected = True
                except KeyManagementError as exc:
                    _log.warning("subject KEK not rotated after a shred: {}", exc.message)
        finally:
            # Keys destroyed are destroyed whatever happens next: the log must say so.
            for subject, _ks, n in destroyed:
                self._record(
                    "key.shred", subject_keyset(subject),
                    {"versions_destroyed": n, "backups_protected": protected}, subject,
                )  # fmt: skip
        return [ShredReport(s, ks, n, protected, rewrapped) for s, ks, n in destroyed]

    def _destroy_subject(self, subject: str) -> tuple[int, int]:
        """Destroy a subject's key versions (one transaction); (keyset id, versions)."""
        name = subject_keyset(subject)
        now = self._now()
        with (
            map_errors(self.engine, "shredding a subject key"),
            write_transaction(self.engine) as conn,
        ):
            row = conn.execute(
                sa.select(keyset_table.c.id).where(keyset_table.c.name == name).with_for_update()
            ).first()
            if row is None:
                keyset_id = conn.execute(
                    keyset_table.insert().values(
                        name=name,
                        kind="subject",
                        subject=subject,
                        primary_version=None,
                        min_decryption_version=1,
                        state="shredded",
                        created_at=now,
                        rotated_at=now,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                destroyed = 0
            else:
                keyset_id = row[0]
                destroyed = conn.execute(
                    key_table.update()
                    .where(key_table.c.keyset_id == keyset_id, key_table.c.wrapped.is_not(None))
                    .values(state="destroyed", wrapped=None, kek_id=None, changed_at=now)
                ).rowcount
                conn.execute(
                    key_table.update()
                    .where(key_table.c.keyset_id == keyset_id)
                    .values(state="destroyed")
                )
                conn.execute(
                    keyset_table.update()
                    .where(keyset_table.c.id == keyset_id)
                    .values(state="shredded", primary_version=None, rotated_at=now)
                )
        self._primaries.pop(name, None)
        self._forget(keyset_id)
        return keyset_id, destroyed

    def _subject_kek(self, conn: Connection, *, exclusive: bool) -> str:
        """The subject KEK recorded by the last rotation ("" before any), read under a
        shared lock (subject-key creation) or an exclusive one (rotation): a rotation
        waits for creations in flight, and creations wait for a rotation to commit."""
        q = sa.select(meta_table.c.value).where(meta_table.c.key == _SUBJECT_KEK_META)
        value = conn.execute(q.with_for_update(read=not exclusive)).scalar_one_or_none()
        if value is None:
            raise KeyManagementError(
                "the keyring's lock row is missing", hint="run `riskguard init` or "
                "Guard.create_schema() (Keyring.ensure_schema() adds it)",
            )  # fmt: skip
        return str(value)

    def ensure_schema(self) -> None:
        """Add the keyring's lock row to ``rg_meta`` where missing (idempotent; done by
        :func:`riskguard.db.create_schema` too)."""
        if not self._meta_ok:
            ensure_meta_row(self.engine)
            self._meta_ok = True

    def rotate_subject_kek(self) -> int:
        """Rotate the provider's ``subject`` KEK, re-wrap every live subject key under the
        new one, and destroy the old KEKs.

        One transaction holds the lock row exclusively from the rotation to the last
        re-wrap (subject-key creation waits meanwhile; concurrent rotations run one after
        the other), records the new KEK there, and commits before any KEK is destroyed;
        creations after it must wrap under the recorded KEK. Cost: one unwrap and one wrap
        per live subject key — shred subjects in batches (:meth:`shred_many`).

        :returns: how many subject keys were re-wrapped.
        :raises KeyManagementError: the provider cannot rotate or destroy KEKs (the
            environment provider): old database backups can still unwrap shredded keys.
        """
        self.ensure_schema()
        k = key_table.c
        total = 0
        new_id: str | None = None
        try:
            with (
                map_errors(self.engine, "re-wrapping subject keys"),
                write_transaction(self.engine) as conn,
            ):
                self._subject_kek(conn, exclusive=True)
                new_id = self.provider.rotate("subject")
                old_ids = [
                    x.id for x in self.provider.keks()
                    if x.purpose == "subject" and x.id != new_id and x.state != "destroyed"
                ]  # fmt: skip
                conn.execute(
                    meta_table.update()
                    .where(meta_table.c.key == _SUBJECT_KEK_META)
                    .values(value=new_id)
                )
                while old_ids:
                    batch = conn.execute(
                        sa.select(k.keyset_id, k.version, k.kek_id, k.wrapped)
                        .where(k.kek_id.in_(old_ids), k.wrapped.is_not(None))
                        .limit(_REWRAP_BATCH)
                    ).all()
                    if not batch:
                        break
                    for keyset_id, version, kek_id, wrapped in batch:
                        context = _wrap_context(keyset_id, version)
                        raw = self.provider.unwrap(bytes(wrapped), context=context)
                        new = self.provider.wrap(raw, context=context, purpose="subject")
                        total += conn.execute(
                            key_table.update()
                            .where(k.keyset_id == keyset_id, k.version == version,
                                   k.kek_id == kek_id)
                            .values(wrapped=new, kek_id=_kek_id(new))
                        ).rowcount  # fmt: skip
        except Exception:
            if new_id is not None:
                # The provider rotated but the re-wrap did not commit: record the new KEK so
                # that creations (which now wrap under it) go on; nothing was destroyed.
                self._record_subject_kek(new_id)
            raise
        for kek in old_ids:
            self.provider.destroy(kek)
        self.invalidate()
        _log.info("subject KEK rotated to {}; {} subject keys re-wrapped", new_id, total)
        return total

    def _record_subject_kek(self, kek_id: str) -> None:
        try:
            with map_errors(self.engine, "recording the subject KEK"), self.engine.begin() as c:
                c.execute(
                    meta_table.update()
                    .where(meta_table.c.key == _SUBJECT_KEK_META)
                    .values(value=kek_id)
                )
        except Exception as exc:  # the original error matters more
            _log.warning("could not record the subject KEK: {}", exc)

    # -- reading the tables --------------------------------------------------------------

    def describe(self, name: str) -> KeysetInfo:
        """A keyset and its versions.

        :raises KeyManagementError: no such keyset.
        """
        found = self.keysets(names=[name])
        if not found:
            raise KeyManagementError(f"no keyset {name!r}", key_id=name)
        return found[0]

    def keysets(
        self, *, kind: str | None = None, names: list[str] | None = None
    ) -> list[KeysetInfo]:
        """Keysets (all, of one ``kind``, or by name) with their versions, by id."""
        s, k = keyset_table.c, key_table.c
        q = sa.select(keyset_table).order_by(s.id)
        if kind is not None:
            q = q.where(s.kind == kind)
        if names is not None:
            q = q.where(s.name.in_(names))
        with map_errors(self.engine, "reading keysets"), self.engine.connect() as conn:
            rows = conn.execute(q).all()
            ids = [r.id for r in rows]
            versions: dict[int, list[KeyVersionInfo]] = {i: [] for i in ids}
            if ids:
                for v in conn.execute(
                    sa.select(k.keyset_id, k.version, k.state, k.kek_id, k.created_at,
                              k.changed_at)
                    .where(k.keyset_id.in_(ids))
                    .order_by(k.keyset_id, k.version)
                ):  # fmt: skip
                    versions[v.keyset_id].append(
                        KeyVersionInfo(v.version, v.state, v.kek_id, v.created_at, v.changed_at)
                    )
        return [
            KeysetInfo(
                r.id,
                r.name,
                r.kind,
                r.subject,
                r.state,
                r.primary_version,
                r.min_decryption_version,
                r.created_at,
                r.rotated_at,
                tuple(versions[r.id]),
            )
            for r in rows
        ]

    def _record(self, action: str, name: str, details: dict[str, Any], subject: str | None) -> None:
        if self.audit is not None:
            self.audit.record(
                action,
                "success",
                resource=ResourceRef("key", name),
                details=details,
                subject=subject,
            )


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a key version cannot decrypt (cached like a key)."""

    message: str
    check: str = "key"
    hint: str | None = None
    shredded: bool = False

    def error(self) -> DecryptionError:
        if self.shredded:
            return ShreddedError()
        return DecryptionError(self.message, check=self.check, hint=self.hint)


_SHREDDED = _Refusal("shredded", shredded=True)


def _wrap_context(keyset_id: int, version: int) -> bytes:
    """The context a data key is wrapped under: its row, so wrapped keys cannot be swapped."""
    return b"riskguard/dek/1:%d:%d" % (keyset_id, version)


def _kek_id(wrapped: bytes) -> str:
    return wrapped_kek_id(wrapped)


def _is_duplicate(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SAIntegrityError):
            return True
        cause = cause.__cause__
    return False
