"""Reload: atomic under concurrent enforcement (in memory and on SQL), and the wiring of
``[access] adapter`` and ``reload`` (the watcher itself: test_watcher.py)."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from riskguard.access import (
    AccessControl,
    Decision,
    FilePolicy,
    MemoryPolicy,
    PolicyLine,
    PolicyWatcher,
    Snapshot,
    SqlPolicy,
    parse_policy_text,
)
from riskguard.config import load_settings
from riskguard.errors import ConfigError, PolicyError
from riskguard.guard import Guard
from tests.conftest import SqlNamespace
from tests.doubles import RecordingAudit

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = POLICIES / "model.conf"
WAIT = 10.0  # seconds: a generous bound for "the next check", never a sleep

# -- reload is atomic under concurrent enforcement -----------------------------------------
#
# Policies A and B both allow alice to read "doc", but through different lines: A grants
# role_a (line 3) to a rule on line 1, B grants role_b (line 1) to a rule on line 2. A also
# allows "sheet", B allows "note". A reader that decides on a mix of the two — A's rules
# with B's grants, B's rules with A's grants, or the first requests of a batch on one policy
# and the rest on the other — gets an answer neither policy gives: "doc" denied, or "sheet"
# and "note" both allowed, or a reason naming the other file's line.

A = """\
p, role_a, *, doc, read, *, allow
p, role_a, *, sheet, read, *, allow
g, alice, role_a, *
"""
B = """\
g, alice, role_b, *
p, role_b, *, doc, read, *, allow
p, role_b, *, note, read, *, allow
"""
BATCH = (
    ("alice", "m:1", "doc", "read"),
    ("alice", "m:1", "sheet", "read"),
    ("alice", "m:1", "note", "read"),
)
Answers = dict[str, tuple[tuple[bool, str], ...]]


def _answers(a: str = "A.csv", b: str = "B.csv") -> Answers:
    """What each policy answers to the batch, its lines read from sources ``a`` and ``b``."""
    deny = (False, "denied: no rule allows it")
    return {
        "A": ((True, f"allowed by {a}:1"), (True, f"allowed by {a}:2"), deny),
        "B": ((True, f"allowed by {b}:2"), deny, (True, f"allowed by {b}:3")),
    }


def _decide_batch(snap: Snapshot) -> tuple[tuple[bool, str], ...]:
    """The batch on one snapshot, taken once by the caller."""
    out = []
    for req in BATCH:
        d: Decision = snap.engine.decide((*req, "", ""))
        out.append((d.allowed, d.reason))
    return tuple(out)


def _classify(got: tuple[tuple[bool, str], ...], answers: Answers) -> str | None:
    """Which policy gave these answers: "A", "B", or None for a mix."""
    return next((name for name, want in answers.items() if got == want), None)


class Switch:
    """A policy source that returns A or B, whichever is current."""

    def __init__(self) -> None:
        self.policies = {"A": parse_policy_text(A, "A.csv"), "B": parse_policy_text(B, "B.csv")}
        self.current = "A"

    def load(self) -> Sequence[PolicyLine]:
        return self.policies[self.current]


def test_the_check_would_see_a_mixed_policy() -> None:
    # The detector of the next test is meaningful: every way of mixing A and B fails it.
    answers = _answers()
    a, b = parse_policy_text(A, "A.csv"), parse_policy_text(B, "B.csv")

    def only(ptype: str, lines: list[PolicyLine]) -> list[PolicyLine]:
        return [pl for pl in lines if pl.ptype == ptype]

    for mixed in (only("p", a) + only("g", b), only("p", b) + only("g", a)):
        ac = AccessControl(MODEL, MemoryPolicy([(pl.ptype, *pl.values) for pl in mixed]))
        assert _classify(_decide_batch(ac.snapshot), answers) is None
        assert ac.decide(*BATCH[0]).allowed is False  # "doc" is allowed by A and by B
    on_a = _decide_batch(AccessControl(MODEL, MemoryPolicy(A, name="A.csv")).snapshot)
    on_b = _decide_batch(AccessControl(MODEL, MemoryPolicy(B, name="B.csv")).snapshot)
    assert (_classify(on_a, answers), _classify(on_b, answers)) == ("A", "B")
    assert _classify((on_a[0], on_a[1], on_b[2]), answers) is None  # torn across a reload


@pytest.fixture
def busy_switching() -> Iterator[None]:
    # Switch threads as often as possible, so that a reload that was not one atomic swap
    # would be caught half-way by some reader.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _progressed(batches: list[int], target: int, bad: list[object]) -> bool:
    return batches[0] >= target or bool(bad)


def _run_concurrently(
    ac: AccessControl, flip: Callable[[], None], answers: Answers, flips: int, readers: int = 4
) -> tuple[dict[str, int], list[object]]:
    """Readers decide the batch on ``ac.snapshot`` and ``doc`` with ``ac.decide`` while the
    caller's ``flip()`` changes the policy ``flips`` times; each flip waits until the
    readers have decided at least once more, so that both policies are really seen."""
    seen = {"A": 0, "B": 0}
    doc_answers = {answers["A"][0], answers["B"][0]}  # "doc" alone, on either policy
    bad: list[object] = []
    stop = threading.Event()
    progress = threading.Condition()
    batches = [0]

    def read() -> None:
        try:
            while not stop.is_set():
                got = _decide_batch(ac.snapshot)  # one snapshot for the whole batch
                single = ac.decide(*BATCH[0])
                name = _classify(got, answers)
                if name is None:
                    bad.append(got)
                if (single.allowed, single.reason) not in doc_answers:
                    bad.append(single)
                with progress:
                    if name is not None:
                        seen[name] += 1
                    batches[0] += 1
                    progress.notify_all()
        except Exception as exc:
            bad.append(exc)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for t in threads:
        t.start()
    try:
        for _ in range(flips):
            with progress:
                target = batches[0] + readers
            flip()
            with progress:
                done = progress.wait_for(partial(_progressed, batches, target, bad), WAIT)
                assert done, "the readers made no progress"
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    return seen, bad


def test_reload_under_concurrent_enforcement_never_mixes_policies(busy_switching: None) -> None:
    source = Switch()
    audit = RecordingAudit()
    ac = AccessControl(MODEL, source, audit=audit, allow_sample_rate=0.0)
    hashes = {"A": ac.policy_hash}

    def flip() -> None:
        source.current = "B" if source.current == "A" else "A"
        hashes[source.current] = ac.reload()

    seen, bad = _run_concurrently(ac, flip, _answers(), flips=300)
    assert bad == []
    assert seen["A"] > 0 and seen["B"] > 0
    reloads = [e for e in audit.events if e.action == "policy.reload"]
    assert len(reloads) == 300 and {e.outcome for e in reloads} == {"success"}
    assert [e.details["hash"] for e in reloads[:2]] == [hashes["B"], hashes["A"]]
    assert hashes["A"] != hashes["B"]


def test_sql_reload_under_concurrent_enforcement_never_mixes_policies(
    sql_schema: SqlNamespace, busy_switching: None
) -> None:
    # The same on the SQL adapter, with replace() and reload() in different threads: a
    # reload that read the table half-way through a replace would mix the policies.
    a = parse_policy_text(A, "A.csv")
    b = parse_policy_text(B, "B.csv")
    store = SqlPolicy(sql_schema.engine)
    store.replace(a)
    ac = AccessControl(MODEL, store)
    stop = threading.Event()
    errors: list[Exception] = []

    def reload_forever() -> None:
        try:
            while not stop.is_set():
                ac.reload()
        except Exception as exc:
            errors.append(exc)

    current = ["A"]

    def flip() -> None:
        current[0] = "B" if current[0] == "A" else "A"
        store.replace(a if current[0] == "A" else b)

    reloader = threading.Thread(target=reload_forever)
    reloader.start()
    try:
        answers = _answers("sql:default", "sql:default")
        seen, bad = _run_concurrently(ac, flip, answers, flips=20, readers=2)
    finally:
        stop.set()
        reloader.join(WAIT * 6)
    assert errors == [] and bad == []
    assert seen["A"] > 0 and seen["B"] > 0


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model, policy = tmp_path / "model.conf", tmp_path / "policy.csv"
    shutil.copy(POLICIES / "model.conf", model)
    shutil.copy(POLICIES / "policy.csv", policy)
    return model, policy


def _reloads(audit: RecordingAudit) -> list[tuple[str, str | None, dict[str, object]]]:
    return [(e.outcome, e.reason, e.details) for e in audit.events if e.action == "policy.reload"]


# -- [access] reload and adapter in the settings -------------------------------------------


def _config(tmp_path: Path, url: str, access: str, extra: str = "") -> Path:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(
        f'[database]\nurl = "{url}"\n\n[audit]\ncheckpoints = false\n\n'
        f'[access]\nmodel = "{MODEL}"\naudit_allow_sample_rate = 0.0\n{access}\n{extra}',
        encoding="utf-8",
    )
    return cfg


def test_guard_access_reads_the_sql_policy_and_watches_it(
    sql_schema: SqlNamespace, tmp_path: Path
) -> None:
    access = 'adapter = "sql"\nreload = "watch"\nwatch_interval_s = 60\npolicy_name = "shop"'
    cfg = _config(tmp_path, sql_schema.url, access)
    SqlPolicy(sql_schema.engine, name="shop").replace(parse_policy_text(A, "A.csv"))
    with Guard(load_settings(cfg, environ={}), engine=sql_schema.engine) as guard:
        ac = guard.access
        try:
            assert ac.decide(*BATCH[0]).reason == "allowed by sql:shop:1"
            (watcher,) = ac.triggers
            assert isinstance(watcher, PolicyWatcher) and watcher.alive
            assert watcher.interval == 60.0
            SqlPolicy(sql_schema.engine, name="shop").replace(parse_policy_text(B))
            assert watcher.wait_checked(WAIT)
            assert ac.decide(*BATCH[0]).reason == "allowed by sql:shop:2"
            events = [e for e in guard.audit.store.events() if e.action == "policy.reload"]
            assert [e.outcome for e in events] == ["success"]
            assert events[0].details["hash"] == ac.policy_hash
        finally:
            ac.close()
        assert not watcher.alive and ac.triggers == ()
        ac.close()  # idempotent


def test_the_sql_adapter_needs_an_engine_and_a_stored_policy(
    sql_schema: SqlNamespace, tmp_path: Path
) -> None:
    settings = load_settings(_config(tmp_path, sql_schema.url, 'adapter = "sql"'), environ={})
    with pytest.raises(ConfigError) as err:
        AccessControl.from_settings(settings)
    assert err.value.key == "access.adapter"
    with pytest.raises(PolicyError, match="no access policy named 'default'"):
        AccessControl.from_settings(settings, engine=sql_schema.engine)


def test_the_file_adapter_with_a_watcher_and_close(files: tuple[Path, Path]) -> None:
    model, policy = files
    cfg = model.parent / "riskguard.toml"
    cfg.write_text(
        '[access]\nmodel = "model.conf"\npolicy = "policy.csv"\nreload = "watch"\n',
        encoding="utf-8",
    )
    with AccessControl.from_settings(load_settings(cfg, environ={})) as ac:
        (watcher,) = ac.triggers
        assert isinstance(watcher, PolicyWatcher) and isinstance(ac.source, FilePolicy)
        assert watcher.interval == 1.0
        first = ac.policy_hash
        policy.write_text(policy.read_text(encoding="utf-8") + "g, zoe, cs_agent, *\n")
        assert watcher.wait_checked(WAIT)
        assert ac.policy_hash != first
    assert not watcher.alive


def test_redis_reload_needs_a_redis_url(files: tuple[Path, Path]) -> None:
    model, _ = files
    cfg = model.parent / "riskguard.toml"
    cfg.write_text('[access]\nmodel = "model.conf"\nreload = "redis"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        AccessControl.from_settings(load_settings(cfg, environ={}))
    assert err.value.key == "redis.url"


@pytest.mark.parametrize(
    ("key", "value"),
    [("policy_name", '"a/b"'), ("watch_interval_s", "0"), ("reload", '"inotify"')],
)
def test_bad_access_settings_are_config_errors(tmp_path: Path, key: str, value: str) -> None:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(f"[access]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert err.value.key == f"access.{key}" and err.value.line == 2
