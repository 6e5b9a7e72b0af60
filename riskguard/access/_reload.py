"""Reload triggers: a watcher that polls the policy, and Redis notices between processes.

Both only call :meth:`AccessControl.reload`, which builds a new snapshot aside and swaps it
in whole (a request sees the old policy or the new one, never a mix), keeps the old one
when the new one is invalid, and records ``policy.reload`` either way.

* :class:`PolicyWatcher` — a daemon thread that, every ``interval`` seconds, compares a
  fingerprint of the model file and the policy (the policy file's content, or the SQL
  policy's version row) with the last one and reloads on a change. Contents are hashed:
  an editor that keeps the size and the modification time does not hide a change, and a
  ``touch`` does not cause a reload.
* :class:`RedisReloadNotifier` / :class:`RedisReloadListener` — for many processes on one
  SQL policy: the writer publishes ``{"hash": …, "name": …}`` on
  ``<prefix>access:reload`` after :meth:`SqlPolicy.replace`; every listener reloads unless
  the hash is the one already in force. Pub/sub does not queue: a listener that was
  disconnected reloads once when it has subscribed again. Needs ``riskguard[redis]``.

The triggers hold their :class:`AccessControl` weakly: when it is garbage, they stop.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loguru import logger

from riskguard.access._lines import FilePolicy
from riskguard.errors import PolicyError, StorageError

if TYPE_CHECKING:
    from riskguard.access._control import AccessControl

__all__ = ["PolicyWatcher", "RedisReloadListener", "RedisReloadNotifier", "reload_channel"]

_log = logger.bind(component="access")
_DEFAULT_PREFIX = "rg:"
_MAX_NOTICE = 4096  # bytes; a notice is a hash and a name


def reload_channel(prefix: str = _DEFAULT_PREFIX) -> str:
    """The pub/sub channel of reload notices: ``<prefix>access:reload``."""
    return f"{prefix}access:reload"


def _file_digest(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError as exc:
        # A missing file is a state of its own: the reload it causes fails and is audited.
        return f"unreadable: {exc.strerror or exc}".encode()


def _fingerprint(control: AccessControl) -> str:
    """What the watcher compares: the model file, and the policy file or store marker.

    :raises StorageError: the SQL policy's version cannot be read.
    """
    h = hashlib.sha256(_file_digest(control.model_path))
    source = control.source
    if isinstance(source, FilePolicy):
        h.update(_file_digest(source.path))
    else:
        marker = getattr(source, "marker", None)
        if callable(marker):
            h.update(repr(marker()).encode("utf-8"))
    return h.hexdigest()


class PolicyWatcher:
    """Reload an :class:`AccessControl` when its model or policy changes.

    ::

        with PolicyWatcher(ac, interval=1.0):
            serve()

    Watches the model file and the policy: a :class:`FilePolicy`'s file, or any source
    with a ``marker()`` method (:class:`SqlPolicy` returns its version). Other sources
    (:class:`MemoryPolicy`) are not watched. A change that fails to load is audited by
    :meth:`AccessControl.reload`, logged, and not retried until the files change again;
    a database error is logged and retried at the next check. The thread survives both.

    The first fingerprint is taken here: make the watcher right after the
    :class:`AccessControl` (as :meth:`AccessControl.from_settings` does), or a change in
    between goes unnoticed until the next one.

    :param control: what to reload (held weakly: the thread ends when it is garbage).
    :param interval: seconds between checks.
    :raises ValueError: ``interval`` is not positive.
    :raises StorageError: the SQL policy's version cannot be read.
    """

    def __init__(self, control: AccessControl, *, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self.interval = float(interval)
        self._control = weakref.ref(control)
        self._last = _fingerprint(control)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._check_lock = threading.Lock()
        self._counts = threading.Condition()
        self._started = 0  # checks begun (under _counts)
        self._done = 0  # checks finished
        self._finished = False  # the thread ended
        self._thread: threading.Thread | None = None

    # -- one check ----------------------------------------------------------------------

    def check_now(self) -> bool:
        """Check once, in the calling thread, as the watching thread does; reload on a
        change. Errors are logged, never raised.

        :returns: ``True`` when a change was seen (and a reload tried).
        """
        control = self._control()
        if control is None:
            return False
        with self._check_lock:
            with self._counts:
                self._started += 1
            try:
                return self._check(control)
            except Exception as exc:  # the watcher must outlive any one bad check
                _log.opt(exception=exc).error("access policy check failed")
                return False
            finally:
                with self._counts:
                    self._done += 1
                    self._counts.notify_all()

    def _check(self, control: AccessControl) -> bool:
        try:
            fp = _fingerprint(control)
        except StorageError as exc:
            _log.warning("cannot check the access policy for changes: {}", exc)
            return False
        if fp == self._last:
            return False
        try:
            control.reload()
        except PolicyError as exc:
            self._last = fp  # a broken edit: wait for the next one instead of re-failing
            _log.warning("access policy reload failed, keeping the last good one: {}", exc)
        except StorageError as exc:
            _log.warning("access policy reload failed, will retry: {}", exc)
        else:
            self._last = fp
        return True

    # -- the thread -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """``True`` while the watching thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PolicyWatcher:
        """Start the watching thread (a daemon).

        :raises RuntimeError: it was started before.
        """
        if self._thread is not None:
            raise RuntimeError("a PolicyWatcher starts once")
        self._thread = threading.Thread(
            target=self._run, name="riskguard-policy-watcher", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self._control() is not None:
                self._wake.clear()
                self.check_now()
                self._wake.wait(self.interval)
        finally:
            with self._counts:
                self._finished = True
                self._counts.notify_all()

    def wait_checked(self, timeout: float | None = None, *, wake: bool = True) -> bool:
        """Wait until a check that began after this call has finished.

        :param wake: start that check now rather than at the end of the interval.
        :returns: ``False`` on timeout, or when the thread is not running.
        """
        with self._counts:
            target = self._started + 1
        if wake:
            self._wake.set()
        with self._counts:
            if self._thread is None:
                return False
            self._counts.wait_for(lambda: self._done >= target or self._finished, timeout)
            return self._done >= target

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> PolicyWatcher:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- Redis ------------------------------------------------------------------------------


def _redis() -> Any:
    # The import guard naming riskguard[redis], the client check and the error mapping
    # live with the other Redis stores.
    from riskguard.auth import _redis

    return _redis


class RedisReloadNotifier:
    """Tell every :class:`RedisReloadListener` that the policy changed.

    ::

        version = store.replace(lines, model=model)
        with RedisReloadNotifier.from_url(url, name=store.name) as n:
            n.notify(load_snapshot(model, store).hash)

    :param client: a ``redis.Redis`` client (not closed by :meth:`close`).
    :param prefix: riskguard's key prefix (``[redis] prefix``).
    :param name: the SQL policy's name; listeners of another policy ignore the notice.
    :raises ImportError: the ``riskguard[redis]`` extra is not installed.
    """

    def __init__(
        self, client: Any, *, prefix: str = _DEFAULT_PREFIX, name: str | None = None
    ) -> None:
        self.client = _redis()._client(client)
        self.channel = reload_channel(prefix)
        self.name = name
        self._owns = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = _DEFAULT_PREFIX, name: str | None = None
    ) -> RedisReloadNotifier:
        """A notifier with its own client on the server at ``url`` (closed by :meth:`close`)."""
        notifier = cls(_redis().redis.Redis.from_url(url), prefix=prefix, name=name)
        notifier._owns = True
        return notifier

    def notify(self, policy_hash: str | None = None) -> int:
        """Publish a notice after a policy was stored.

        :param policy_hash: the new policy's hash (:attr:`AccessControl.policy_hash`, or
            ``Snapshot.hash``); listeners already on it skip the reload. ``None`` makes
            every listener reload.
        :returns: how many listeners the server delivered it to.
        :raises StorageError: Redis failed.
        """
        payload = json.dumps({"hash": policy_hash, "name": self.name}, separators=(",", ":"))
        with _redis()._mapped("publishing a policy reload notice"):
            return int(self.client.publish(self.channel, payload))

    def close(self) -> None:
        """Close the client if :meth:`from_url` made it."""
        if self._owns:
            self.client.close()

    def __enter__(self) -> RedisReloadNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisReloadListener:
    """Reload an :class:`AccessControl` on each notice a :class:`RedisReloadNotifier`
    publishes, in a daemon thread.

    ::

        listener = RedisReloadListener.from_url(ac, "redis://…", name="default").start()
        ...
        listener.stop()

    A notice whose hash is the policy in force is skipped; so is one for another policy
    ``name`` (when both name one). After a lost connection the client subscribes again
    and the listener reloads once, for the notices it may have missed.

    :param control: what to reload (held weakly: the thread ends when it is garbage).
    :param client: a ``redis.Redis`` client (not closed by :meth:`stop`).
    :param prefix: riskguard's key prefix (``[redis] prefix``).
    :param name: the SQL policy's name, or ``None`` to act on every notice.
    :param retry_s: seconds to wait after a Redis error before reading again.
    :raises ImportError: the ``riskguard[redis]`` extra is not installed.
    """

    def __init__(
        self,
        control: AccessControl,
        client: Any,
        *,
        prefix: str = _DEFAULT_PREFIX,
        name: str | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.client = _redis()._client(client)
        self._owns = False
        self.channel = reload_channel(prefix)
        self.name = name
        self.retry_s = float(retry_s)
        self._control = weakref.ref(control)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._counts = threading.Condition()
        self._finished = False
        self._handled = 0
        self._reloads = 0

    @classmethod
    def from_url(
        cls,
        control: AccessControl,
        url: str,
        *,
        prefix: str = _DEFAULT_PREFIX,
        name: str | None = None,
        retry_s: float = 1.0,
    ) -> RedisReloadListener:
        """A listener with its own client on the server at ``url`` (closed by :meth:`stop`)."""
        client = _redis().redis.Redis.from_url(url)
        listener = cls(control, client, prefix=prefix, name=name, retry_s=retry_s)
        listener._owns = True
        return listener

    @property
    def alive(self) -> bool:
        """``True`` while the listening thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def handled(self) -> int:
        """Notices read so far (acted on or skipped)."""
        return self._handled

    @property
    def reloads(self) -> int:
        """Reloads tried so far (after a notice or a reconnection)."""
        return self._reloads

    def start(self, timeout: float = 10.0) -> RedisReloadListener:
        """Subscribe, wait until the server confirms it (so a notice published after this
        returns is delivered), then start the thread.

        :raises StorageError: Redis failed or did not confirm within ``timeout`` seconds.
        :raises RuntimeError: it was started before.
        """
        if self._thread is not None or self._pubsub is not None:
            raise RuntimeError("a RedisReloadListener starts once")
        redis = _redis().redis
        self._pubsub = self.client.pubsub()
        try:
            self._pubsub.subscribe(self.channel)
            msg = self._pubsub.get_message(timeout=timeout)
            if msg is None or msg.get("type") != "subscribe":
                raise StorageError(
                    f"Redis did not confirm the subscription to {self.channel!r}", engine="redis"
                )
        except redis.RedisError as exc:
            self._close()
            raise StorageError(
                f"subscribing to policy reload notices failed ({type(exc).__name__})",
                engine="redis",
            ) from exc
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(
            target=self._run, name="riskguard-policy-reload-listener", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        redis = _redis().redis
        try:
            while not self._stop.is_set() and self._control() is not None:
                try:
                    msg = self._pubsub.get_message(timeout=0.2)
                except redis.RedisError as exc:
                    # The client reconnects and subscribes again on the next read.
                    _log.warning("policy reload notices: {}; retrying", type(exc).__name__)
                    self._stop.wait(self.retry_s)
                    continue
                if msg is None:
                    continue
                if msg.get("type") == "subscribe":
                    # start() consumed the first confirmation: this one follows a lost
                    # connection, and the notices sent meanwhile are gone.
                    self._reload("subscribed again")
                elif msg.get("type") == "message":
                    self._handle(msg.get("data"))
        except Exception as exc:  # a bug: say so rather than end silently
            _log.opt(exception=exc).error("the policy reload listener stopped")
        finally:
            self._close()
            with self._counts:
                self._finished = True
                self._counts.notify_all()

    def _handle(self, data: Any) -> None:
        try:
            notice = self._parse(data)
            control = self._control()
            if notice is None or control is None:
                return
            h, name = notice
            if self.name is not None and name is not None and name != self.name:
                return
            if h is not None and h == control.policy_hash:
                _log.debug("policy reload notice for the policy in force: skipped")
                return
            self._reload("notice")
        finally:
            with self._counts:
                self._handled += 1
                self._counts.notify_all()

    @staticmethod
    def _parse(data: Any) -> tuple[str | None, str | None] | None:
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8")
        try:
            doc = json.loads(raw) if len(raw) <= _MAX_NOTICE else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            _log.warning("malformed policy reload notice ignored")
            return None
        h, name = doc.get("hash"), doc.get("name")
        return (h if isinstance(h, str) else None, name if isinstance(name, str) else None)

    def _reload(self, why: str) -> None:
        control = self._control()
        if control is None:
            return
        try:
            control.reload()
        except (PolicyError, StorageError) as exc:
            _log.warning(
                "access policy reload ({}) failed, keeping the last good one: {}", why, exc
            )
        finally:
            with self._counts:
                self._reloads += 1
                self._counts.notify_all()

    def wait_handled(self, count: int, timeout: float | None = None) -> bool:
        """Wait until :attr:`handled` reaches ``count``.

        :returns: ``False`` on timeout, or when the thread stopped first.
        """
        with self._counts:
            if self._thread is None:
                return False
            self._counts.wait_for(lambda: self._handled >= count or self._finished, timeout)
            return self._handled >= count

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            pubsub.close()
        if self._owns:
            self._owns = False
            self.client.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread, wait for it, and close the subscription (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        elif self._thread is None:
            self._close()

    def __enter__(self) -> RedisReloadListener:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
