"""One exception tree for every part of riskguard.

::

    RiskGuardError                      code="riskguard_error"
     ├── ConfigError                    path, key, line        (usage/config: CLI exit 2)
     ├── StorageError                   engine                 (database or Redis failed)
     ├── KeyManagementError             key_id
     ├── DecryptionError                check
     │    └── ShreddedError             subject key destroyed: render as "erased"
     ├── TokenError                     code (stable, e.g. "expired", "bad_signature")
     ├── AccessDenied                   subject, domain, obj, act
     ├── PolicyError                    path, line
     ├── RuleError                      path, line
     ├── AuditError                     an event cannot be recorded (bad or oversize details)
     ├── IntegrityError                 seq, kind
     ├── InvalidValue                   kind, check (a phone, ID number… that does not parse)
     └── RetentionError

Every message says what went wrong, where, and what to do. Messages never carry secrets or
plaintext personal data: callers pass identifiers (key ids, seq numbers, file and line),
never values. ``diagnostics()`` renders the error for a person (the CLI prints it).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AccessDenied",
    "AuditError",
    "ConfigError",
    "DecryptionError",
    "IntegrityError",
    "InvalidValue",
    "KeyManagementError",
    "PolicyError",
    "RetentionError",
    "RiskGuardError",
    "RuleError",
    "ShreddedError",
    "StorageError",
    "TokenError",
]


class RiskGuardError(Exception):
    """Root of every error riskguard raises on purpose."""

    code: str = "riskguard_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def where(self) -> str | None:
        """Where the problem is (file and line, seq, key…), or ``None``."""
        return None

    def diagnostics(self) -> str:
        """A multi-line explanation for people: what, where, what to do."""
        lines = [f"error[{self.code}]: {self.message}"]
        where = self.where()
        if where:
            lines.append(f"  where: {where}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        where = self.where()
        return f"{self.message} ({where})" if where else self.message


class _FileLocated(RiskGuardError):
    """An error that points into a file people edit."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = str(path) if path is not None else None
        self.line = line

    def where(self) -> str | None:
        if self.path is None:
            return f"line {self.line}" if self.line is not None else None
        return f"{self.path}:{self.line}" if self.line is not None else self.path


class ConfigError(_FileLocated):
    """The configuration (file, environment or argument) is invalid or unusable."""

    code = "config"

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, path=path, line=line, hint=hint)
        self.key = key

    def where(self) -> str | None:
        base = super().where()
        if self.key is None:
            return base
        return f"{base}, key {self.key!r}" if base else f"key {self.key!r}"


class StorageError(RiskGuardError):
    """A database or Redis operation failed (unreachable, schema missing, conflict)."""

    code = "storage"

    def __init__(self, message: str, *, engine: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.engine = engine

    def where(self) -> str | None:
        return f"engine {self.engine}" if self.engine else None


class KeyManagementError(RiskGuardError):
    """A key could not be created, found, unwrapped, rotated or retired."""

    code = "key_management"

    def __init__(self, message: str, *, key_id: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.key_id = key_id

    def where(self) -> str | None:
        return f"key {self.key_id}" if self.key_id else None


class DecryptionError(RiskGuardError):
    """A ciphertext is malformed, tampered with, misplaced or under an unusable key.

    ``check`` names the check that failed (``format``, ``version``, ``key``, ``context``,
    ``tag``…) without revealing anything about the plaintext.
    """

    code = "decryption"

    def __init__(self, message: str, *, check: str = "tag", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.check = check

    def where(self) -> str | None:
        return f"check {self.check}"


class ShreddedError(DecryptionError):
    """The data subject's key was destroyed (crypto-shredding): the value is erased."""

    code = "shredded"

    def __init__(self, message: str = "the value was erased (subject key destroyed)") -> None:
        super().__init__(message, check="shredded")


class TokenError(RiskGuardError):
    """A token was rejected. ``code`` is stable: clients and tests match on it."""

    code = "invalid_token"

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class AccessDenied(RiskGuardError):
    """The access-control decision was *deny*."""

    code = "access_denied"

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        domain: str | None = None,
        obj: str | None = None,
        act: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.subject, self.domain, self.obj, self.act = subject, domain, obj, act

    def where(self) -> str | None:
        parts = (self.subject, self.domain, self.obj, self.act)
        if all(p is None for p in parts):
            return None
        return "request (" + ", ".join("-" if p is None else p for p in parts) + ")"


class PolicyError(_FileLocated):
    """An access-control model, policy or policy-test file is invalid."""

    code = "policy"


class RuleError(_FileLocated):
    """A fraud rule file is invalid."""

    code = "rule"


class AuditError(RiskGuardError):
    """An event cannot be recorded: malformed action or outcome, details that are not
    JSON-serialisable or over the size cap. Nothing of the batch was appended."""

    code = "audit"


class IntegrityError(RiskGuardError):
    """The audit log is damaged. ``seq`` is the first damaged event, ``kind`` the damage."""

    code = "integrity"

    def __init__(
        self, message: str, *, seq: int | None = None, kind: str, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.seq = seq
        self.kind = kind

    def where(self) -> str | None:
        return f"seq {self.seq}, {self.kind}" if self.seq is not None else self.kind


class InvalidValue(RiskGuardError, ValueError):
    """A value handed to riskguard for a personal-data field does not parse or validate (a
    phone number, a resident ID number, an address). ``kind`` names the field kind
    (``phone``, ``cn_id``…), ``check`` the check that failed (``parse``, ``checksum``,
    ``birth_date``…). The message never repeats the value."""

    code = "invalid_value"

    def __init__(self, message: str, *, kind: str, check: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.check = check

    def where(self) -> str | None:
        return f"{self.kind}, check {self.check}"


class RetentionError(RiskGuardError):
    """A retention schedule is invalid or a purge / data-subject request failed."""

    code = "retention"
