"""PolicyWatcher: reloads when the model, the policy file or the SQL policy changes, keeps
the last good policy on a broken edit, and outlives every error."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from loguru import logger

from riskguard.access import AccessControl, PolicyLine, PolicyWatcher, SqlPolicy, parse_policy_text
from riskguard.errors import StorageError
from tests.access.test_reload import BATCH, MODEL, POLICIES, WAIT, A, B, _reloads
from tests.conftest import SqlNamespace
from tests.doubles import RecordingAudit


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model, policy = tmp_path / "model.conf", tmp_path / "policy.csv"
    shutil.copy(POLICIES / "model.conf", model)
    shutil.copy(POLICIES / "policy.csv", policy)
    return model, policy


@pytest.fixture
def access_logs() -> Iterator[list[str]]:
    """Messages riskguard's access component logs during the test."""
    records: list[str] = []
    sink = logger.add(
        lambda m: records.append(m.record["message"]),
        level="DEBUG",
        filter=lambda r: r["extra"].get("component") == "access",
    )
    logger.enable("riskguard")
    try:
        yield records
    finally:
        logger.disable("riskguard")
        logger.remove(sink)


def test_the_watcher_reloads_an_edit_and_keeps_the_last_good_policy(
    files: tuple[Path, Path], access_logs: list[str]
) -> None:
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit, allow_sample_rate=0.0)
    original = policy.read_text(encoding="utf-8")
    first = ac.policy_hash
    with PolicyWatcher(ac, interval=60.0) as watcher:  # checks when woken, not by the clock
        assert watcher.wait_checked(WAIT)
        assert _reloads(audit) == []  # nothing changed, nothing reloaded

        policy.write_text(original + "g, zoe, cs_agent, *\n", encoding="utf-8")
        assert watcher.wait_checked(WAIT)
        second = ac.policy_hash
        assert second != first and ac.enforce("zoe", "m:1001", "order", "read")
        assert _reloads(audit) == [("success", None, {"previous": first, "hash": second})]

        broken = original + "g, zoe, cs_agent, *\np, customer, *, order, read, owner, alow\n"
        policy.write_text(broken, encoding="utf-8")
        n = broken.count("\n")
        assert watcher.wait_checked(WAIT)
        assert ac.policy_hash == second and ac.enforce("zoe", "m:1001", "order", "read")
        outcome, reason, details = _reloads(audit)[-1]
        assert outcome == "failure" and details == {"previous": second}
        assert reason == f"unknown effect 'alow' (allow or deny) (policy.csv:{n})"
        assert any("keeping the last good one" in m and f"policy.csv:{n}" in m for m in access_logs)
        assert watcher.alive
        assert watcher.wait_checked(WAIT)
        assert len(_reloads(audit)) == 2  # the broken file is not retried until it changes

        policy.write_text(original, encoding="utf-8")
        assert watcher.wait_checked(WAIT)
        assert ac.policy_hash == first and not ac.enforce("zoe", "m:1001", "order", "read")
        assert _reloads(audit)[-1] == ("success", None, {"previous": second, "hash": first})
    assert not watcher.alive


def test_the_watcher_compares_contents_not_times(files: tuple[Path, Path]) -> None:
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit)
    watcher = PolicyWatcher(ac)  # not started: check_now() checks in this thread
    stat = policy.stat()
    policy.touch()
    os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert watcher.check_now() is False and _reloads(audit) == []
    # same size, same modification time, other contents: still a change
    text = policy.read_text(encoding="utf-8")
    edited = text.replace("g, sam, merchant_staff, m:1001", "g, sam, merchant_staff, m:1002")
    assert len(edited) == len(text) and edited != text
    stat = policy.stat()
    policy.write_text(edited, encoding="utf-8")
    os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert watcher.check_now() is True
    assert [o for o, _, _ in _reloads(audit)] == ["success"]
    assert ac.enforce("sam", "m:1002", "order", "read")
    assert watcher.wait_checked(0.1) is False  # no thread to wait for


def test_the_watcher_watches_the_model_and_a_missing_file(files: tuple[Path, Path]) -> None:
    model, policy = files
    audit = RecordingAudit()
    ac = AccessControl(model, policy, audit=audit)
    watcher = PolicyWatcher(ac)
    first = ac.policy_hash
    model.write_text("# a new first line\n" + model.read_text(encoding="utf-8"), encoding="utf-8")
    assert watcher.check_now()
    assert ac.policy_hash != first  # the model text is part of the hash
    policy.unlink()
    assert watcher.check_now()
    outcome, reason, _ = _reloads(audit)[-1]
    assert outcome == "failure" and reason is not None and "cannot read the policy" in reason


def test_the_watcher_checks_on_its_interval(files: tuple[Path, Path]) -> None:
    model, policy = files
    ac = AccessControl(model, policy)
    first = ac.policy_hash
    with PolicyWatcher(ac, interval=0.01) as watcher:
        policy.write_text(policy.read_text(encoding="utf-8") + "g, zoe, cs_agent, *\n")
        assert watcher.wait_checked(WAIT, wake=False)  # the clock, not a wake-up
        assert ac.policy_hash != first


class FlakyMarker:
    """A source whose change marker fails, as a database can, then recovers."""

    def __init__(self) -> None:
        self.fail: type[Exception] | None = None
        self.version = 1
        self.lines = parse_policy_text(A, "A.csv")

    def marker(self) -> str:
        if self.fail is not None:
            raise self.fail("the database is away")
        return str(self.version)

    def load(self) -> Sequence[PolicyLine]:
        return self.lines


def test_the_watcher_survives_errors_and_retries_database_failures(
    access_logs: list[str],
) -> None:
    source = FlakyMarker()
    audit = RecordingAudit()
    ac = AccessControl(MODEL, source, audit=audit)
    with PolicyWatcher(ac, interval=60.0) as watcher:
        source.fail = StorageError
        source.version = 2
        assert watcher.wait_checked(WAIT)
        assert any("cannot check the access policy" in m for m in access_logs)
        source.fail = RuntimeError  # a bug somewhere: logged, the thread goes on
        assert watcher.wait_checked(WAIT)
        assert watcher.alive and any("check failed" in m for m in access_logs)
        assert _reloads(audit) == []
        source.fail = None
        source.lines = parse_policy_text(B, "B.csv")
        assert watcher.wait_checked(WAIT)
        assert [o for o, _, _ in _reloads(audit)] == ["success"]
        assert ac.decide(*BATCH[0]).reason == "allowed by B.csv:2"


def test_the_watcher_reloads_a_changed_sql_policy(sql_schema: SqlNamespace) -> None:
    store = SqlPolicy(sql_schema.engine)
    store.replace(parse_policy_text(A, "A.csv"))
    audit = RecordingAudit()
    ac = AccessControl(MODEL, store, audit=audit)
    with PolicyWatcher(ac, interval=60.0) as watcher:
        assert watcher.wait_checked(WAIT) and _reloads(audit) == []
        other = SqlPolicy(sql_schema.new_engine())  # another process's writer
        try:
            other.replace(parse_policy_text(B, "B.csv"))
        finally:
            other.engine.dispose()
        assert watcher.wait_checked(WAIT)
        assert ac.decide(*BATCH[0]).reason == "allowed by sql:default:2"
        assert [o for o, _, _ in _reloads(audit)] == ["success"]


def test_the_watcher_ends_with_its_access_control(files: tuple[Path, Path]) -> None:
    ac = AccessControl(*files)
    watcher = PolicyWatcher(ac, interval=60.0).start()
    assert watcher.wait_checked(WAIT)
    del ac
    gc.collect()
    assert watcher.wait_checked(WAIT) is False  # the thread ended instead of checking
    assert not watcher.alive
    watcher.stop()
    with pytest.raises(RuntimeError):
        watcher.start()
    with pytest.raises(ValueError):
        PolicyWatcher(AccessControl(*files), interval=0)
