"""AccessControl: decisions for the application, read from the request context, audited."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from itertools import repeat
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loguru import logger

from riskguard.access._decision import Decision, EngineKind
from riskguard.access._lines import FilePolicy, PolicyLine, PolicySource
from riskguard.access._model import ModelDef, read_model
from riskguard.access._reload import PolicyWatcher, RedisReloadListener
from riskguard.access._snapshot import Snapshot, load_snapshot
from riskguard.access._sql import SqlPolicy
from riskguard.context import Principal, current_principal
from riskguard.errors import AccessDenied, ConfigError, PolicyError, StorageError
from riskguard.types import AuditRecorder, ResourceRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SqlEngine

    from riskguard.config import Settings

__all__ = ["PLATFORM_DOMAIN", "AccessControl"]

#: The domain of a request when neither the caller nor the principal names one.
PLATFORM_DOMAIN = "platform"
_MAX_LINES = 16
_log = logger.bind(component="access")


class AccessControl:
    """Least-privilege decisions on Casbin model and policy files.

    ::

        ac = AccessControl("policies/model.conf", "policies/policy.csv", audit=guard.audit)
        ac.require(None, "m:1001", "order", "read", owner=order.customer_id)

    A model in the family :mod:`riskguard.access._compile` describes (the shipped one is)
    decides on a compiled index; any other model decides on ``casbin.Enforcer`` unchanged
    (:attr:`engine` says which, :attr:`fallback_reason` why). The two agree exactly.

    ``sub`` and ``dom`` may be ``None``: the subject is then the current
    :class:`~riskguard.context.Principal`'s, and the domain the principal's, or
    :data:`PLATFORM_DOMAIN`. Request tokens beyond ``sub, dom, obj, act`` (``owner``,
    ``assignee`` in the shipped model) are keyword arguments; missing ones are ``""``. The
    principal's token roles are not consulted: roles come from the policy's ``g`` lines.

    Every decision is recorded as ``access.decision`` on ``audit`` (outcome ``allow`` or
    ``deny``, reason the deciding rule's ``file:line``): denies always, allows with
    probability ``allow_sample_rate`` drawn from ``rng`` (seeded, so runs repeat).

    :meth:`reload` swaps in a new snapshot whole; :class:`~riskguard.access.PolicyWatcher`
    (files, SQL version) and :class:`~riskguard.access.RedisReloadListener` (notices from
    other processes) call it. :meth:`from_settings` starts the one ``[access] reload``
    names, and :meth:`close` (or leaving a ``with`` block) stops it.

    :param model: the model file (``model.conf``).
    :param policy: the policy file (``policy.csv``) or any :class:`PolicySource`.
    :param cache_size: decisions kept in the LRU (0: none).
    :param compiled: ``False`` always decides with ``casbin.Enforcer``.
    :raises PolicyError: the model or policy is invalid (file and line named).
    """

    def __init__(
        self,
        model: str | Path,
        policy: str | Path | PolicySource,
        *,
        audit: AuditRecorder | None = None,
        allow_sample_rate: float = 1.0,
        rng: random.Random | None = None,
        cache_size: int = 65_536,
        compiled: bool = True,
    ) -> None:
        if not 0.0 <= allow_sample_rate <= 1.0:
            raise ValueError("allow_sample_rate must be between 0 and 1")
        self.model_path = Path(model)
        self.source: PolicySource = FilePolicy(policy) if isinstance(policy, str | Path) else policy
        self.audit = audit
        self.allow_sample_rate = float(allow_sample_rate)
        self._rng = rng if rng is not None else random.Random(0x5EED)
        self._cache_size = cache_size
        self._compiled = compiled
        self._reload_lock = threading.Lock()
        self._triggers: list[PolicyWatcher | RedisReloadListener] = []
        self._snap = self._load()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        audit: AuditRecorder | None = None,
        engine: SqlEngine | None = None,
    ) -> AccessControl:
        """Build from ``[access]`` (paths relative to the config file) and start the reload
        trigger it names: ``watch`` polls the model and the policy (the file, or the SQL
        policy's version) every ``watch_interval_s``; ``redis`` listens for notices on
        ``<[redis] prefix>access:reload``. :meth:`close` stops it.

        :param engine: the engine of riskguard's tables; needed by ``adapter = "sql"``,
            which reads the policy named ``policy_name`` from ``rg_access_policy``.
        :raises PolicyError: the model or policy is invalid (or no SQL policy is stored).
        :raises ConfigError: ``adapter = "sql"`` without an engine, or ``reload = "redis"``
            without ``[redis] url``.
        :raises StorageError: the database or Redis is unreachable.
        :raises ImportError: ``reload = "redis"`` without the ``riskguard[redis]`` extra.
        """
        a = settings.access
        source: PolicySource
        if a.adapter == "sql":
            if engine is None:
                raise ConfigError(
                    'adapter = "sql" reads the policy from the database: pass engine=',
                    key="access.adapter",
                    hint="Guard.access passes its engine",
                )
            source = SqlPolicy(engine, name=a.policy_name)
        else:
            source = FilePolicy(settings.resolve(a.policy))
        redis_url = settings.redis.url
        if a.reload == "redis" and redis_url is None:
            raise ConfigError(
                'reload = "redis" needs a Redis server', key="redis.url", hint="set [redis] url"
            )
        ac = cls(
            settings.resolve(a.model),
            source,
            audit=audit,
            allow_sample_rate=a.audit_allow_sample_rate,
        )
        try:
            if a.reload == "watch":
                ac._triggers.append(PolicyWatcher(ac, interval=a.watch_interval_s).start())
            elif a.reload == "redis" and redis_url is not None:
                listener = RedisReloadListener.from_url(
                    ac,
                    redis_url,
                    prefix=settings.redis.prefix,
                    name=a.policy_name if a.adapter == "sql" else None,
                )
                ac._triggers.append(listener.start())
        except BaseException:
            ac.close()
            raise
        return ac

    @property
    def triggers(self) -> tuple[PolicyWatcher | RedisReloadListener, ...]:
        """The reload triggers :meth:`from_settings` started (check ``alive`` in a health
        probe)."""
        return tuple(self._triggers)

    def close(self) -> None:
        """Stop the reload triggers :meth:`from_settings` started (idempotent). Decisions
        keep working on the policy in force."""
        while self._triggers:
            self._triggers.pop().stop()

    def __enter__(self) -> AccessControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the policy -------------------------------------------------------------------

    def _load(self) -> Snapshot:
        model = read_model(self.model_path)
        self._check_request(model)
        return load_snapshot(
            model, self.source, cache_size=self._cache_size, compiled=self._compiled
        )

    @staticmethod
    def _check_request(model: ModelDef) -> None:
        tokens = model.request["r"]
        missing = [t for t in ("sub", "obj", "act") if t not in tokens]
        if missing:
            raise model.error(
                "the request definition must name sub, obj and act; missing: " + ", ".join(missing),
                "r",
                "r",
            )

    def reload(self) -> str:
        """Read the model and policy again and swap them in whole; on error keep the
        current policy. Recorded as ``policy.reload`` with the policy hash.

        :returns: the new policy hash.
        :raises PolicyError: the new files are invalid (the old policy stays in force).
        :raises StorageError: the policy's database failed (the old policy stays in force).
        """
        with self._reload_lock:
            old = self._snap.hash
            try:
                snap = self._load()
            except PolicyError as exc:
                where = f" ({Path(exc.path).name}:{exc.line or '-'})" if exc.path else ""
                self._record_reload("failure", exc.message + where, old, None)
                raise
            except StorageError as exc:
                self._record_reload("failure", str(exc), old, None)
                raise
            self._snap = snap
        self._record_reload("success", None, old, snap.hash)
        _log.info("policy reloaded: {} (engine {})", snap.hash[:19], snap.engine.kind)
        return snap.hash

    def _record_reload(self, outcome: Any, reason: str | None, old: str, new: str | None) -> None:
        if self.audit is not None:
            details: dict[str, Any] = {"previous": old}
            if new is not None:
                details["hash"] = new
            self.audit.record("policy.reload", outcome, reason=reason, details=details)

    @property
    def snapshot(self) -> Snapshot:
        """The policy in force (immutable; a reload replaces it)."""
        return self._snap

    @property
    def engine(self) -> EngineKind:
        """``"compiled"`` or ``"casbin"`` (the fallback)."""
        return self._snap.engine.kind

    @property
    def fallback_reason(self) -> str | None:
        """Why the model runs on ``casbin.Enforcer``, or ``None`` when it is compiled."""
        return self._snap.fallback_reason

    @property
    def policy_hash(self) -> str:
        """``sha256:…`` of the model and policy in force."""
        return self._snap.hash

    @property
    def lines(self) -> tuple[PolicyLine, ...]:
        """The policy lines in force."""
        return self._snap.lines

    # -- deciding ---------------------------------------------------------------------

    def decide(
        self, sub: str | None, dom: str | None, obj: str, act: str, **attrs: str | int | None
    ) -> Decision:
        """Decide and audit one request.

        :raises TypeError: an attribute the model's request does not define.
        :raises PolicyError: the fallback engine failed on the model.
        """
        snap = self._snap
        decision, sub, dom, principal = self._decide(snap, sub, dom, obj, act, attrs)
        if self.audit is not None:
            self._record(decision, sub, dom, obj, act, attrs, principal, snap)
        return decision

    def _decide(
        self,
        snap: Snapshot,
        sub: str | None,
        dom: str | None,
        obj: str,
        act: str,
        attrs: Mapping[str, str | int | None],
    ) -> tuple[Decision, str, str, Principal | None]:
        """The decision on ``snap``, not audited (the policy tools' dry runs use it), with
        the subject and domain it resolved from the context."""
        if attrs and not attrs.keys() <= snap.attributes:
            bad = sorted(attrs.keys() - snap.attributes)
            raise TypeError(
                f"unknown request attribute {bad[0]!r}; the model's are: "
                + (", ".join(sorted(snap.attributes)) or "none")
            )
        principal = current_principal()
        if sub is None:
            sub = principal.subject if principal is not None else ""
        if dom is None:
            dom = (principal.domain if principal is not None else None) or PLATFORM_DOMAIN
        values: dict[str, str] = {"sub": sub, "dom": dom, "obj": obj, "act": act}
        for name, value in attrs.items():
            values[name] = value if type(value) is str else "" if value is None else str(value)
        if not sub:
            decision = Decision(False, engine=snap.engine.kind, note="denied: no subject")
        else:
            tokens = snap.request_tokens
            decision = snap.engine.decide(tuple(map(values.get, tokens, repeat(""))))
        return decision, sub, dom, principal

    def enforce(
        self, sub: str | None, dom: str | None, obj: str, act: str, **attrs: str | int | None
    ) -> bool:
        """``True`` when the request is allowed (see :meth:`decide`)."""
        return self.decide(sub, dom, obj, act, **attrs).allowed

    def require(
        self, sub: str | None, dom: str | None, obj: str, act: str, **attrs: str | int | None
    ) -> Decision:
        """Like :meth:`decide`, raising on a deny. The error names the subject, domain,
        object and action, never the attributes (owner ids) or any data.

        :raises AccessDenied: the request is denied.
        """
        decision = self.decide(sub, dom, obj, act, **attrs)
        if not decision.allowed:
            who = sub if sub is not None else getattr(current_principal(), "subject", None)
            raise AccessDenied(
                f"access denied: {act!r} on {obj!r}",
                subject=who,
                domain=dom,
                obj=obj,
                act=act,
                hint="the access.decision audit event names the rule that decided",
            )
        return decision

    def _record(
        self,
        decision: Decision,
        sub: str,
        dom: str,
        obj: str,
        act: str,
        attrs: dict[str, Any],
        principal: Principal | None,
        snap: Snapshot,
    ) -> None:
        audit = self.audit
        assert audit is not None
        if decision.allowed:
            rate = self.allow_sample_rate
            if rate <= 0.0 or (rate < 1.0 and self._rng.random() >= rate):
                return
        details: dict[str, Any] = {
            "act": act,
            "engine": decision.engine,
            "policy": snap.hash[:23],
        }
        # line numbers only, capped: the event must stay small whatever the policy
        if decision.lines:
            details["lines"] = list(decision.lines[:_MAX_LINES])
        if decision.overridden:
            details["overridden"] = [r.line for r in decision.overridden[:_MAX_LINES]]
        given = sorted(k for k, v in attrs.items() if v not in (None, ""))
        if given:
            details["attributes"] = given  # names only: the values are subject ids
        actor = None
        if sub and (principal is None or principal.subject != sub):
            actor = Principal(subject=sub, domain=dom)
            details["sub"] = sub
        audit.record(
            "access.decision",
            "allow" if decision.allowed else "deny",
            resource=ResourceRef(type=obj, tenant=dom),
            reason=decision.reason,
            details=details,
            actor=actor,
        )
