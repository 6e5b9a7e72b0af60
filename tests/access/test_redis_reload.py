"""Reload on Redis notices: in one process, after a lost connection, and across two."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from riskguard.access import (
    AccessControl,
    FilePolicy,
    RedisReloadListener,
    RedisReloadNotifier,
    SqlPolicy,
    load_snapshot,
    read_model,
)
from riskguard.audit import AuditLog, SearchFilter, SqlStore
from riskguard.errors import StorageError
from tests.conftest import RedisNamespace, SqlNamespace
from tests.doubles import RecordingAudit

ROOT = Path(__file__).parents[2]
POLICIES = ROOT / "policies"
MODEL = POLICIES / "model.conf"
CHILD = Path(__file__).with_name("_reload_child.py")
WAIT = 10.0
ZOE = "g, zoe, cs_agent, *\n"


def _eventually(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``check`` until it holds or the deadline passes (for effects in other threads
    or processes that offer nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model, policy = tmp_path / "model.conf", tmp_path / "policy.csv"
    shutil.copy(MODEL, model)
    shutil.copy(POLICIES / "policy.csv", policy)
    return model, policy


@pytest.fixture
def notifier(redis_ns: RedisNamespace) -> Iterator[RedisReloadNotifier]:
    with RedisReloadNotifier.from_url(redis_ns.url, prefix=redis_ns.prefix) as n:
        yield n


def _reloads(audit: RecordingAudit) -> list[str]:
    return [e.outcome for e in audit.events if e.action == "policy.reload"]


def test_a_notice_reloads_unless_its_hash_is_in_force(
    files: tuple[Path, Path], redis_ns: RedisNamespace, notifier: RedisReloadNotifier
) -> None:
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit)
    listener = RedisReloadListener.from_url(ac, redis_ns.url, prefix=redis_ns.prefix)
    with listener:
        assert listener.channel == f"{redis_ns.prefix}access:reload" == notifier.channel
        assert notifier.notify(ac.policy_hash) == 1  # one subscriber: the listener
        assert listener.wait_handled(1, WAIT)
        assert (listener.reloads, _reloads(audit)) == (0, [])  # the policy in force

        policy.write_text(policy.read_text(encoding="utf-8") + ZOE, encoding="utf-8")
        new = load_snapshot(read_model(model), FilePolicy(policy)).hash
        notifier.notify(new)
        assert listener.wait_handled(2, WAIT)
        assert ac.policy_hash == new and ac.enforce("zoe", "m:1001", "order", "read")
        assert _reloads(audit) == ["success"]

        redis_ns.client.publish(listener.channel, b"\x00 not json")
        redis_ns.client.publish(listener.channel, b"[1, 2]")
        notifier.notify(None)  # no hash: always reload
        assert listener.wait_handled(5, WAIT)
        assert _reloads(audit) == ["success", "success"] and listener.alive
    assert not listener.alive
    assert notifier.notify(None) == 0  # stop() unsubscribed


def test_a_broken_policy_is_audited_and_the_listener_goes_on(
    files: tuple[Path, Path], redis_ns: RedisNamespace, notifier: RedisReloadNotifier
) -> None:
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit)
    good = ac.policy_hash
    with RedisReloadListener.from_url(ac, redis_ns.url, prefix=redis_ns.prefix) as listener:
        policy.write_text("p, customer, *, order, read, owner\n", encoding="utf-8")
        notifier.notify(None)
        assert listener.wait_handled(1, WAIT)
        assert ac.policy_hash == good and _reloads(audit) == ["failure"]
        assert listener.alive
        shutil.copy(POLICIES / "policy.csv", policy)
        policy.write_text(policy.read_text(encoding="utf-8") + ZOE, encoding="utf-8")
        notifier.notify(None)
        assert listener.wait_handled(2, WAIT)
        assert _reloads(audit) == ["failure", "success"] and ac.policy_hash != good


def test_notices_for_another_policy_name_are_ignored(
    files: tuple[Path, Path], redis_ns: RedisNamespace
) -> None:
    audit = RecordingAudit()
    ac = AccessControl(*files, audit=audit)
    listener = RedisReloadListener.from_url(ac, redis_ns.url, prefix=redis_ns.prefix, name="shop")
    with (
        listener,
        RedisReloadNotifier.from_url(redis_ns.url, prefix=redis_ns.prefix, name="ops") as ops,
        RedisReloadNotifier.from_url(redis_ns.url, prefix=redis_ns.prefix, name="shop") as shop,
    ):
        ops.notify(None)
        assert listener.wait_handled(1, WAIT) and _reloads(audit) == []
        shop.notify(None)
        assert listener.wait_handled(2, WAIT) and _reloads(audit) == ["success"]


def test_after_a_lost_connection_the_listener_catches_up(
    files: tuple[Path, Path], redis_ns: RedisNamespace
) -> None:
    # Pub/sub keeps nothing for a disconnected subscriber: a notice sent meanwhile is lost,
    # so subscribing again must reload by itself.
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit)
    name = f"{redis_ns.prefix}listener"
    client = redis.Redis.from_url(redis_ns.url, client_name=name)
    try:
        with RedisReloadListener(ac, client, prefix=redis_ns.prefix, retry_s=0.05) as listener:
            policy.write_text(policy.read_text(encoding="utf-8") + ZOE, encoding="utf-8")
            (conn,) = [c for c in redis_ns.client.client_list("pubsub") if c["name"] == name]
            redis_ns.client.client_kill_filter(_id=conn["id"])
            assert _eventually(lambda: listener.reloads == 1)
            assert _reloads(audit) == ["success"] and ac.enforce("zoe", "m:1001", "order", "read")
            assert listener.alive and listener.handled == 0
    finally:
        client.close()


def test_a_listener_starts_once_and_needs_a_redis_client(
    files: tuple[Path, Path], redis_ns: RedisNamespace
) -> None:
    ac = AccessControl(*files)
    listener = RedisReloadListener.from_url(ac, redis_ns.url, prefix=redis_ns.prefix).start()
    try:
        with pytest.raises(RuntimeError):
            listener.start()
    finally:
        listener.stop()
    with pytest.raises(TypeError, match=r"redis\.Redis"):
        RedisReloadListener(ac, "redis://127.0.0.1")
    with pytest.raises(TypeError, match=r"redis\.Redis"):
        RedisReloadNotifier(object())


def test_an_unreachable_redis_is_a_storage_error(files: tuple[Path, Path]) -> None:
    ac = AccessControl(*files)
    url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    listener = RedisReloadListener.from_url(ac, url)
    with pytest.raises(StorageError) as err:
        listener.start(timeout=2)
    assert err.value.engine == "redis" and not listener.alive
    with RedisReloadNotifier.from_url(url) as n, pytest.raises(StorageError):
        n.notify(None)


def test_without_the_extra_the_error_names_it() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from riskguard.access import AccessControl, RedisReloadNotifier\n"
        "try:\n"
        "    RedisReloadNotifier.from_url('redis://127.0.0.1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "pip install 'riskguard[redis]'" in out.stdout, out.stderr


# -- two processes --------------------------------------------------------------------------


def _child_config(tmp_path: Path, sql: SqlNamespace, redis_ns: RedisNamespace) -> Path:
    cfg = tmp_path / "child.toml"
    cfg.write_text(
        f'[database]\nurl = "{sql.url}"\n\n'
        f'[redis]\nurl = "{redis_ns.url}"\nprefix = "{redis_ns.prefix}"\n\n'
        "[audit]\ncheckpoints = false\n\n"
        f'[access]\nmodel = "{MODEL}"\nadapter = "sql"\nreload = "redis"\n'
        "audit_allow_sample_rate = 0.0\n",
        encoding="utf-8",
    )
    return cfg


def test_a_notice_reloads_the_policy_in_another_process(
    sql_schema: SqlNamespace, redis_ns: RedisNamespace, tmp_path: Path
) -> None:
    model = read_model(MODEL)
    store = SqlPolicy(sql_schema.engine)
    store.replace(FilePolicy(POLICIES / "policy.csv").load(), model=model)
    before = load_snapshot(model, store).hash
    stderr = tmp_path / "child.err"
    lines: queue.Queue[str] = queue.Queue()
    with (
        stderr.open("w") as err,
        subprocess.Popen(
            [sys.executable, str(CHILD), str(_child_config(tmp_path, sql_schema, redis_ns))],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        ) as proc,
    ):
        assert proc.stdout is not None
        out = proc.stdout

        def read() -> None:
            for line in out:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def next_line() -> str:
            try:
                return lines.get(timeout=60).strip()
            except queue.Empty:
                proc.kill()
                pytest.fail(f"the child said nothing: {stderr.read_text()}")

        try:
            assert next_line() == f"ready {before} False", stderr.read_text()
            text = (POLICIES / "policy.csv").read_text(encoding="utf-8") + ZOE
            (tmp_path / "new.csv").write_text(text, encoding="utf-8")
            store.import_csv(tmp_path / "new.csv", model=model)
            after = load_snapshot(model, store).hash
            assert after != before
            with RedisReloadNotifier.from_url(
                redis_ns.url, prefix=redis_ns.prefix, name=store.name
            ) as notifier:
                assert notifier.notify(after) == 1  # the child's subscription
            assert next_line() == f"reloaded {after} True", stderr.read_text()
            assert proc.wait(timeout=60) == 0, stderr.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(WAIT)
    # The child's reload is in the shared audit log, with the hash it loaded.
    log = AuditLog(SqlStore(sql_schema.engine, "riskguard/audit"))
    (event,) = log.search(SearchFilter(action="policy.reload"))
    assert event.outcome == "success"
    assert event.details == {"previous": before, "hash": after}
