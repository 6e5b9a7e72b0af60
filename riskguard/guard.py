"""Guard: the composition root. It builds every part from :class:`Settings`, once."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from loguru import logger
from sqlalchemy.engine import Engine

from riskguard import db
from riskguard.config import Settings, load_settings

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

    def create_schema(self) -> None:
        """Create riskguard's tables where missing.

        :raises StorageError: the database is unreachable or refuses DDL.
        """
        db.create_schema(self.engine)

    def close(self) -> None:
        """Release the engine's connections (only an engine this Guard created)."""
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Guard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
