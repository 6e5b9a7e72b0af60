"""riskguard: the compliance, privacy and risk-control layer for O2O backends.

The top level exports only the version, the composition root and the errors; each part has
its own facade (``riskguard.audit``, ``riskguard.crypto``, ``riskguard.auth``,
``riskguard.access``, ``riskguard.fraud``, ``riskguard.retention``).

riskguard logs through loguru and stays silent until the application opts in::

    from loguru import logger
    logger.enable("riskguard")
"""

from __future__ import annotations

from loguru import logger as _logger

from riskguard._version import __version__
from riskguard.errors import (
    AccessDenied,
    AuditError,
    ConfigError,
    DecryptionError,
    IntegrityError,
    KeyManagementError,
    PolicyError,
    RetentionError,
    RiskGuardError,
    RuleError,
    ShreddedError,
    StorageError,
    TokenError,
)
from riskguard.guard import Guard

_logger.disable("riskguard")

__all__ = [
    "AccessDenied",
    "AuditError",
    "ConfigError",
    "DecryptionError",
    "Guard",
    "IntegrityError",
    "KeyManagementError",
    "PolicyError",
    "RetentionError",
    "RiskGuardError",
    "RuleError",
    "ShreddedError",
    "StorageError",
    "TokenError",
    "__version__",
]
