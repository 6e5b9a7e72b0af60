"""Settings: one ``riskguard.toml``, one section a part, validated, with env overrides.

Lookup order for the file: the ``path`` argument, then ``$RISKGUARD_CONFIG``, then
``./riskguard.toml``; with none of them, every key takes its safe default.

Environment overrides take the form ``RISKGUARD_<SECTION>__<KEY>`` (double underscore
between section and key), e.g. ``RISKGUARD_DATABASE__URL`` or
``RISKGUARD_AUDIT__CHECKPOINT_EVERY_EVENTS=500``. Their values are read as TOML literals
when they parse as one (``500``, ``true``, ``["a", "b"]``) and as plain strings otherwise.

Relative paths in the file (including a relative SQLite path in ``database.url``) are
relative to the file's folder, not to the working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from riskguard.errors import ConfigError

__all__ = [
    "AccessSettings",
    "AuditSettings",
    "AuthSettings",
    "DatabaseSettings",
    "FraudSettings",
    "KeysSettings",
    "RedisSettings",
    "RetentionSettings",
    "Settings",
    "load_settings",
]

_ENV_PREFIX = "RISKGUARD_"
_CONFIG_ENV = "RISKGUARD_CONFIG"
_DEFAULT_FILE = "riskguard.toml"


class _Section(BaseModel):
    # strict: a TOML string where a number belongs is an error, not a silent coercion.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DatabaseSettings(_Section):
    """``[database]``: where riskguard's own tables (prefix ``rg_``) live."""

    url: str = "sqlite:///riskguard.db"
    echo: bool = False
    pool_size: int = Field(default=5, ge=1, le=200)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    connect_timeout_s: int = Field(default=5, ge=1, le=300)


class RedisSettings(_Section):
    """``[redis]``: shared counters, deny-list and reload notices across processes."""

    url: str | None = None
    prefix: str = "rg:"


class KeysSettings(_Section):
    """``[keys]``: key-encryption keys and data-key caching."""

    provider: Literal["file", "env", "memory"] = "file"
    keyring_path: Path = Field(default=Path("keys/keyring.json"), strict=False)
    passphrase_env: str = "RISKGUARD_KEYRING_PASSPHRASE"
    kek_env: str = "RISKGUARD_KEK"
    dek_cache_ttl_s: int = Field(default=300, ge=0)
    blind_index_region: str = "CN"
    # Modules whose SQLAlchemy tables hold encrypted columns (for `riskguard keys rewrap`,
    # `status`, `retire` and `shred`), e.g. ["myapp.models"].
    models: list[str] = Field(default_factory=list)


class AuthSettings(_Section):
    """``[auth]``: token issue and verification."""

    issuer: str = "https://riskguard.invalid"
    audience: str = "riskguard-api"
    algorithm: Literal["EdDSA", "ES256", "RS256", "HS256"] = "EdDSA"
    access_token_ttl_s: int = Field(default=300, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=60)
    max_lifetime_s: int = Field(default=3600, ge=60)
    leeway_s: int = Field(default=30, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=512, le=1 << 20)
    revocation_store: Literal["memory", "sql", "redis"] = "sql"
    login_max_failures: int = Field(default=5, ge=1)
    login_window_s: int = Field(default=900, ge=1)


class AccessSettings(_Section):
    """``[access]``: Casbin model and policy, reload, decision auditing.

    ``adapter = "sql"`` reads the policy named ``policy_name`` from the database
    (``rg_access_policy``; ``riskguard policy push`` stores it) instead of ``policy``.
    ``reload = "watch"`` polls the model and the policy every ``watch_interval_s``;
    ``"redis"`` reloads on notices from ``riskguard policy push`` and other processes
    (needs ``[redis] url``).
    """

    model: Path = Field(default=Path("policies/model.conf"), strict=False)
    policy: Path = Field(default=Path("policies/policy.csv"), strict=False)
    resources: Path | None = Field(default=Path("policies/resources.toml"), strict=False)
    adapter: Literal["file", "sql"] = "file"
    policy_name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    reload: Literal["none", "watch", "redis"] = "none"
    watch_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0, strict=False)
    audit_allow_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, strict=False)


class AuditSettings(_Section):
    """``[audit]``: the hash-chained log and its signed checkpoints."""

    log_id: str = Field(default="riskguard/audit", pattern=r"^\S+$", max_length=255)
    checkpoints: bool = True
    signing_key: Path = Field(default=Path("keys/audit-signing.pem"), strict=False)
    key_history: Path | None = Field(default=None, strict=False)
    checkpoint_every_events: int = Field(default=1000, ge=0)
    checkpoint_every_seconds: int = Field(default=3600, ge=0)
    witness_path: Path | None = Field(default=None, strict=False)
    max_details_bytes: int = Field(default=8192, ge=256, le=1 << 20)
    min_retention_days: int = Field(default=183, ge=0)


class FraudSettings(_Section):
    """``[fraud]``: coupon-abuse rules and counters."""

    rules: Path = Field(default=Path("policies/fraud"), strict=False)
    counter_store: Literal["memory", "sql", "redis"] = "sql"
    review_threshold: float = Field(default=50.0, strict=False)
    deny_threshold: float = Field(default=80.0, strict=False)


class RetentionSettings(_Section):
    """``[retention]``: the retention schedule and purge batches."""

    schedule: Path = Field(default=Path("policies/retention.toml"), strict=False)
    batch_size: int = Field(default=1000, ge=1)


class Settings(_Section):
    """The whole configuration. ``base_dir`` is the folder relative paths resolve against."""

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    keys: KeysSettings = KeysSettings()
    auth: AuthSettings = AuthSettings()
    access: AccessSettings = AccessSettings()
    audit: AuditSettings = AuditSettings()
    fraud: FraudSettings = FraudSettings()
    retention: RetentionSettings = RetentionSettings()
    base_dir: Path = Field(default=Path("."), strict=False, exclude=True)
    source: Path | None = Field(default=None, strict=False, exclude=True)

    def resolve(self, path: Path | str) -> Path:
        """``path`` made absolute against the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Alias of :func:`load_settings`."""
        return load_settings(path, environ=environ)


_SECTIONS = {n for n in Settings.model_fields if n not in ("base_dir", "source")}


def load_settings(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate settings from a file and the environment.

    :param path: the config file; ``None`` looks at ``$RISKGUARD_CONFIG`` then
        ``./riskguard.toml`` and falls back to defaults when neither exists.
    :param environ: the environment to read overrides from (default ``os.environ``).
    :raises ConfigError: malformed TOML (with line), unknown key, wrong type or value,
        naming the file and the key.
    """
    env = os.environ if environ is None else environ
    explicit = path is not None or _CONFIG_ENV in env
    file = Path(path if path is not None else env.get(_CONFIG_ENV, _DEFAULT_FILE)).expanduser()
    text: str | None = None
    data: dict[str, Any] = {}
    if file.is_file():
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the config file: {exc}", path=file) from exc
        data = _parse_toml(text, file)
    elif explicit:
        raise ConfigError(
            "the config file does not exist",
            path=file,
            hint="run `riskguard init` to write one, or fix the path",
        )
    _apply_env(data, env)
    base_dir = file.resolve().parent if file.is_file() else Path.cwd()
    source = file.resolve() if file.is_file() else None
    try:
        settings = Settings.model_validate({**data, "base_dir": base_dir, "source": source})
    except ValidationError as exc:
        raise _config_error(exc, source, text, env) from None
    _check_database_url(settings, text, env)
    return _resolve_sqlite_path(settings)


def _check_database_url(settings: Settings, text: str | None, env: Mapping[str, str]) -> None:
    from riskguard.db import normalise_url

    try:
        normalise_url(settings.database.url)
    except ConfigError as exc:
        if "RISKGUARD_DATABASE__URL" in env:
            raise ConfigError(
                f"{exc.message} (from environment variable RISKGUARD_DATABASE__URL)",
                key="database.url",
                hint=exc.hint,
            ) from None
        line = _find_line(text, ["database", "url"]) if text is not None else None
        raise ConfigError(
            exc.message, path=settings.source, key="database.url", line=line, hint=exc.hint
        ) from None


def _parse_toml(text: str, file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"malformed TOML: {msg}", path=file, line=line) from None


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(_ENV_PREFIX) or name == _CONFIG_ENV or "__" not in name:
            continue
        section, _, key = name[len(_ENV_PREFIX) :].lower().partition("__")
        if section not in _SECTIONS:
            # RISKGUARD_* variables of other tools (tests, passphrases) are not config.
            continue
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] must be a table", key=section)
        target[key] = _env_value(raw)


def _config_error(
    exc: ValidationError, file: Path | None, text: str | None, env: Mapping[str, str]
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    env_name = _ENV_PREFIX + "__".join(p.upper() for p in loc[:2]) if len(loc) >= 2 else None
    from_env = env_name is not None and env_name in env
    if err["type"] == "extra_forbidden":
        what = f"unknown key {key!r}"
        hint = "check the spelling; `riskguard init --force` writes a commented example"
    else:
        what = f"invalid value for {key!r}: {err['msg']}"
        hint = None
    if from_env:
        return ConfigError(f"{what} (from environment variable {env_name})", key=key, hint=hint)
    line = _find_line(text, loc) if text is not None else None
    return ConfigError(what, path=file, key=key, line=line, hint=hint)


def _find_line(text: str, loc: list[str]) -> int | None:
    """Best-effort line of ``section.key`` in the TOML text (tomllib keeps no positions)."""
    if not loc:
        return None
    section, key = (loc[0], loc[1]) if len(loc) > 1 else (None, loc[0])
    current: str | None = None
    header_line = None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", s)
        if m:
            current = m.group(1)
            if section is None and current == key:
                return n
            if current == section:
                header_line = n
            continue
        if current == section and re.match(rf"^\"?{re.escape(key)}\"?\s*=", s):
            return n
    return header_line


def _resolve_sqlite_path(settings: Settings) -> Settings:
    url = settings.database.url
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite://" or url.startswith("sqlite:////"):
        return settings
    rest = url[len(prefix) :]
    if rest.startswith(":memory:") or rest == "":
        return settings
    db_path = settings.resolve(rest)
    db = settings.database.model_copy(update={"url": prefix + str(db_path)})
    return settings.model_copy(update={"database": db})
