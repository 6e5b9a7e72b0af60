"""Login hardening: per-account and per-IP throttling of failed logins, with lockouts
that double on each repeat, on shared counter stores.

::

    guard = LoginGuard(SqlCounterStore(engine), audit=audit_log)
    guard.check(account_id, client_ip)            # raises LoginThrottled(retry_after=…)
    if password_ok:
        guard.record_success(account_id, client_ip)
    else:
        guard.record_failure(account_id, client_ip)

Counting is per fixed window: ``max_failures`` failures within ``window`` seconds (the
window opens at the first failure) lock the account — or the IP — for ``lockout``
seconds, doubled for each lockout within ``strike_window`` and capped at
``max_lockout``. A success clears the *account's* failures and strikes, never the IP's:
otherwise an attacker holding one valid account could reset the counter of the address
they spray other accounts from.

Counter keys are keyed hashes of the account id or IP (``key_secret``), so the counter
store holds no account names or addresses. Events ``auth.login`` (``success``,
``failure``, ``deny`` when throttled) name the account id only — pass the account's
opaque id, never the login name the user typed or the password.

:class:`CounterStore` is the plug point (memory, SQL, Redis; one test suite); every
method takes ``now`` so tests never sleep.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from riskguard.context import Principal
from riskguard.errors import ConfigError, RiskGuardError
from riskguard.types import AuditRecorder, ResourceRef

__all__ = [
    "Counter",
    "CounterStore",
    "LoginGuard",
    "LoginThrottled",
    "MemoryCounterStore",
    "ThrottlePolicy",
]

_DEFAULT_KEY = b"riskguard-login-throttle"


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter's value in its current window and when that window ends."""

    count: int
    expires_at: float


@runtime_checkable
class CounterStore(Protocol):
    """Fixed-window counters shared between processes. Every method is atomic."""

    def hit(self, key: str, *, window: float, now: float) -> Counter:
        """Add one to ``key`` and return it. When ``key`` has no unexpired window, a new
        one opens: count 1, ending at ``now + window``."""
        ...

    def peek(self, key: str, *, now: float) -> Counter | None:
        """The counter of ``key`` if its window is still open at ``now``."""
        ...

    def clear(self, key: str) -> None:
        """Forget ``key``."""
        ...


class MemoryCounterStore:
    """A :class:`CounterStore` in one process's memory (tests, single process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}

    def hit(self, key: str, *, window: float, now: float) -> Counter:
        """Add one to ``key`` (see the Protocol)."""
        with self._lock:
            cur = self._counters.get(key)
            if cur is None or cur.expires_at <= now:
                cur = Counter(1, now + window)
                if len(self._counters) > 100_000:  # drop expired ones before growing
                    self._counters = {k: c for k, c in self._counters.items() if c.expires_at > now}
            else:
                cur = Counter(cur.count + 1, cur.expires_at)
            self._counters[key] = cur
            return cur

    def peek(self, key: str, *, now: float) -> Counter | None:
        """The counter of ``key`` if its window is open."""
        cur = self._counters.get(key)
        return cur if cur is not None and cur.expires_at > now else None

    def clear(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._counters.pop(key, None)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Limits for one dimension (account or IP).

    :param max_failures: failures within ``window`` that start a lockout.
    :param window: seconds the failure count runs from its first failure.
    :param lockout: the first lockout's length in seconds; each further lockout within
        ``strike_window`` doubles it, up to ``max_lockout``.
    """

    max_failures: int = 5
    window: float = 900.0
    lockout: float = 60.0
    max_lockout: float = 3600.0
    strike_window: float = 86_400.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or (not 1 <= self.max_failures <= 10_000)
        ):
            raise ConfigError("max_failures must be an integer from 1 to 10000",
                              key="max_failures")  # fmt: skip
        for name in ("window", "lockout", "max_lockout", "strike_window"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds", key=name)
        if self.max_lockout < self.lockout:
            raise ConfigError("max_lockout must be at least lockout", key="max_lockout")

    def lockout_for(self, strikes: int) -> float:
        """The lockout after ``strikes`` lockouts (1 for the first)."""
        return float(min(self.lockout * 2 ** min(strikes - 1, 60), self.max_lockout))


class LoginThrottled(RiskGuardError):
    """Too many failed logins: refuse the attempt before checking the credentials.

    ``retry_after`` is whole seconds until the lockout ends (for a ``Retry-After``
    header); ``scope`` is ``account`` or ``ip`` (for logs: telling the user which one
    would help an attacker).
    """

    code = "login_throttled"

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(
            f"too many failed login attempts; retry after {retry_after} s",
            hint="wait for the lockout to end; it doubles on each repeat",
        )
        self.retry_after = retry_after
        self.scope = scope


@dataclass(frozen=True, slots=True)
class FailureResult:
    """What :meth:`LoginGuard.record_failure` did: the account's failure count in its
    window (``None`` without an account) and the lockout it started, if any."""

    failures: int | None
    locked_for: float | None


class LoginGuard:
    """Throttle failed logins per account and per IP.

    :param store: a shared :class:`CounterStore`.
    :param account: limits per account (default 5 failures / 15 min, lockout 1 min
        doubling to 1 h).
    :param ip: limits per client IP (default 50 failures / 15 min: many users may share
        one address behind a NAT).
    :param key_secret: keys the counter-key hash; set it (≥ 16 bytes) so the counter
        store cannot be matched against a list of account ids or addresses. Every
        process sharing a store needs the same secret.
    :param action: the audit action (``auth.login``; the OAuth server uses it for client
        authentication too).
    :raises ConfigError: a policy or the secret is unusable.
    """

    def __init__(
        self,
        store: CounterStore,
        *,
        account: ThrottlePolicy | None = None,
        ip: ThrottlePolicy | None = None,
        key_secret: bytes | None = None,
        audit: AuditRecorder | None = None,
        action: str = "auth.login",
    ) -> None:
        if key_secret is not None and (not isinstance(key_secret, bytes) or len(key_secret) < 16):
            raise ConfigError("key_secret must be at least 16 bytes", key="key_secret")
        self._store = store
        self._policies = {
            "account": account or ThrottlePolicy(),
            "ip": ip or ThrottlePolicy(max_failures=50),
        }
        self._secret = key_secret or _DEFAULT_KEY
        self._audit = audit
        self._action = action

    def _key(self, kind: str, scope: str, value: str) -> str:
        mac = hmac.new(self._secret, f"{scope}\0{value}".encode(), hashlib.sha256)
        return f"{kind}{scope[0]}:{mac.hexdigest()[:40]}"

    def _subjects(self, account: str | None, ip: str | None) -> list[tuple[str, str]]:
        return [(s, v) for s, v in (("account", account), ("ip", ip)) if v]

    def _record(self, outcome: Any, account: str | None, reason: str | None,
                details: dict[str, Any]) -> None:  # fmt: skip
        if self._audit is None:
            return
        actor = Principal(subject=account[:255], type="user") if account else None
        resource = ResourceRef("account", account[:255] if account else None)
        self._audit.record(
            self._action, outcome, actor=actor, reason=reason, details=details, resource=resource
        )

    def check(self, account: str | None, ip: str | None, *, now: float | None = None) -> None:
        """Refuse the attempt while the account or the IP is locked out.

        :raises LoginThrottled: with the seconds until the longer lockout ends.
        :raises StorageError: the counter store failed (fail closed: no login).
        """
        t = time.time() if now is None else float(now)
        worst: tuple[float, str] | None = None
        for scope, value in self._subjects(account, ip):
            lock = self._store.peek(self._key("l", scope, value), now=t)
            if lock is not None and (worst is None or lock.expires_at > worst[0]):
                worst = (lock.expires_at, scope)
        if worst is not None:
            retry = max(1, math.ceil(worst[0] - t))
            self._record("deny", account, "throttled", {"scope": worst[1], "retry_after": retry})
            raise LoginThrottled(retry, worst[1])

    def record_failure(
        self, account: str | None, ip: str | None, *, now: float | None = None,
        reason: str = "bad_credentials",
    ) -> FailureResult:  # fmt: skip
        """Count a failed login; lock out the account or the IP at the limit.

        :param reason: a short code for the audit event (never the password).
        :raises StorageError: the counter store failed.
        """
        t = time.time() if now is None else float(now)
        failures: int | None = None
        locked: float | None = None
        for scope, value in self._subjects(account, ip):
            policy = self._policies[scope]
            fail_key = self._key("f", scope, value)
            count = self._store.hit(fail_key, window=policy.window, now=t).count
            if scope == "account":
                failures = count
            if count >= policy.max_failures:
                strikes = self._store.hit(self._key("s", scope, value),
                                          window=policy.strike_window, now=t).count  # fmt: skip
                duration = policy.lockout_for(strikes)
                self._store.hit(self._key("l", scope, value), window=duration, now=t)
                self._store.clear(fail_key)  # the next lockout needs a full count again
                locked = duration if locked is None else max(locked, duration)
        details: dict[str, Any] = {"failures": failures}
        if locked is not None:
            details["locked_for"] = locked
        self._record("failure", account, reason[:64], details)
        return FailureResult(failures, locked)

    def record_success(
        self, account: str | None, ip: str | None, *, now: float | None = None
    ) -> None:
        """A successful login: clear the account's failures and strikes (not the IP's).

        :raises StorageError: the counter store failed.
        """
        if account:
            self._store.clear(self._key("f", "account", account))
            self._store.clear(self._key("s", "account", account))
        self._record("success", account, None, {})
