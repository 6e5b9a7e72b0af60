"""Guard: the composition root. It builds every part from :class:`Settings`, once."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from loguru import logger
from sqlalchemy.engine import Engine

from riskguard import db
from riskguard.config import Settings, load_settings

if TYPE_CHECKING:
    from riskguard.access import AccessControl
    from riskguard.audit import AuditLog, KeyHistory
    from riskguard.crypto import FieldCrypto

__all__ = ["Guard"]

_log = logger.bind(component="guard")


class Guard:
    """Everything riskguard offers an application, built from one :class:`Settings`.

    ``Guard`` owns its engine unless one is passed in (an application may share its own).
    Parts are created on first use and then reused.

    :param settings: validated settings (see :func:`riskguard.config.load_settings`).
    :param engine: an existing SQLAlchemy engine for riskguard's tables.
    """

    def __init__(self, settings: Settings | None = None, *, engine: Engine | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self._owns_engine = engine is None
        self._engine = engine
        self._audit: AuditLog | None = None
        self._access: AccessControl | None = None
        self._crypto: FieldCrypto | None = None

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, engine: Engine | None = None) -> Guard:
        """Load ``riskguard.toml`` (see :func:`load_settings` for the lookup) and build a Guard.

        :raises ConfigError: the file is missing (when named), malformed or invalid.
        """
        return cls(load_settings(path), engine=engine)

    @property
    def engine(self) -> Engine:
        """The engine for riskguard's tables (created from ``[database]`` on first use).

        :raises ConfigError: the database URL is unsupported or its driver is missing.
        """
        if self._engine is None:
            d = self.settings.database
            self._engine = db.create_engine(
                d.url,
                echo=d.echo,
                pool_size=d.pool_size,
                busy_timeout_ms=d.sqlite_busy_timeout_ms,
                connect_timeout_s=d.connect_timeout_s,
            )
            _log.debug("engine created for {}", self._engine.url.get_backend_name())
        return self._engine

    def audit_keys(self) -> KeyHistory | None:
        """The checkpoint keys ``[audit]`` names: the key history file when set, else the
        signing key PEM; ``None`` when ``checkpoints = false``.

        :raises ConfigError: a named key file is missing or invalid.
        """
        from riskguard.audit import KeyHistory, load_signing_key

        a = self.settings.audit
        if not a.checkpoints:
            return None
        if a.key_history is not None:
            return KeyHistory.load(self.settings.resolve(a.key_history))
        return KeyHistory(signing=[load_signing_key(self.settings.resolve(a.signing_key))])

    @property
    def audit(self) -> AuditLog:
        """The audit log on riskguard's tables, configured from ``[audit]``.

        :raises ConfigError: the signing key is missing or invalid (``riskguard audit keygen``
            writes one; ``checkpoints = false`` records without checkpoints).
        """
        if self._audit is None:
            from riskguard.audit import AuditLog, SqlStore

            a = self.settings.audit
            self._audit = AuditLog(
                SqlStore(self.engine, a.log_id),
                keys=self.audit_keys(),
                checkpoint_every_events=a.checkpoint_every_events,
                checkpoint_every_seconds=a.checkpoint_every_seconds,
                witness_path=self.settings.resolve(a.witness_path) if a.witness_path else None,
                max_details_bytes=a.max_details_bytes,
                min_retention_days=a.min_retention_days,
            )
        return self._audit

    @property
    def access(self) -> AccessControl:
        """Access decisions on the ``[access]`` model and policy, audited on :attr:`audit`;
        ``adapter = "sql"`` reads the policy from :attr:`engine`'s database, and the
        ``reload`` trigger the settings name runs until :meth:`AccessControl.close`.

        :raises PolicyError: the model or policy is invalid (file and line named), or no
            policy of that name is stored (SQL adapter).
        :raises ConfigError: the audit log cannot be built (see :attr:`audit`), or
            ``reload = "redis"`` without ``[redis] url``.
        :raises StorageError: the database or Redis is unreachable.
        """
        if self._access is None:
            from riskguard.access import AccessControl

            self._access = AccessControl.from_settings(
                self.settings, audit=self.audit, engine=self.engine
            )
        return self._access

    @property
    def crypto(self) -> FieldCrypto:
        """Field encryption configured from ``[keys]``: the keyring on :attr:`engine`
        (data keys wrapped by the configured provider's KEK), audited on :attr:`audit`.

        :raises KeyManagementError: the provider cannot be built: the keyring file is
            missing or does not open (wrong passphrase, passphrase variable unset), or the
            KEK variable is malformed.
        """
        if self._crypto is None:
            from riskguard.crypto import FieldCrypto, Keyring, provider_from_settings

            k = self.settings.keys
            keyring = Keyring(
                self.engine,
                provider_from_settings(self.settings),
                audit=self.audit,
                cache_ttl_s=k.dek_cache_ttl_s,
            )
            self._crypto = FieldCrypto(keyring, region=k.blind_index_region)
        return self._crypto

    def create_schema(self) -> None:
        """Create riskguard's tables where missing.

        :raises StorageError: the database is unreachable or refuses DDL.
        """
        db.create_schema(self.engine)

    def close(self) -> None:
        """Stop the access policy's reload trigger, then release the engine's connections
        (only an engine this Guard created)."""
        if self._access is not None:
            self._access.close()
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None
        self._audit = None
        self._access = None
        self._crypto = None

    def __enter__(self) -> Guard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
