"""Least-privilege access control on Casbin model and policy files.

``AccessControl`` decides requests (subject, domain, object, action and the model's extra
attributes such as ``owner``) exactly as ``casbin.Enforcer`` does on the same files, on a
compiled index when the model is in the supported family (RBAC with domains, role
hierarchy, deny-override, owner conditions, ``keyMatch`` objects) and on
``casbin.Enforcer`` itself otherwise. Each decision names the policy lines that made it and
is recorded as an ``access.decision`` audit event.

::

    from riskguard.access import AccessControl
    ac = AccessControl("policies/model.conf", "policies/policy.csv", audit=guard.audit)
    if ac.enforce("alice", "m:1001", "order", "read", owner=order.customer_id): ...
    ac.require(None, None, "audit.log", "read")   # subject and domain from the context

Where the policy lives (a :class:`PolicySource`, one verb ``load()``): :class:`FilePolicy`
(Casbin's CSV file), :class:`SqlPolicy` (table ``rg_access_policy`` on SQLite, PostgreSQL
or MariaDB; errors and decisions point at ``sql:<name>:<position>``) and
:class:`MemoryPolicy` (the test double). :meth:`AccessControl.reload` swaps a new snapshot
in whole and keeps the last good one on error, audited as ``policy.reload`` with the
hash; :class:`PolicyWatcher` calls it when the files or the SQL policy change, and
:class:`RedisReloadListener` when another process publishes with
:class:`RedisReloadNotifier` (extra ``riskguard[redis]``)::

    model = read_model("policies/model.conf")
    store = SqlPolicy(guard.engine)            # the policy named "default"
    store.replace(FilePolicy("policies/policy.csv").load(), model=model)  # checked first
    with RedisReloadNotifier.from_url(redis_url, name=store.name) as notifier:
        notifier.notify(load_snapshot(model, store).hash)  # other processes reload
"""

from __future__ import annotations

from riskguard.access._analysis import PolicyView
from riskguard.access._compile import CompiledModel, recognise
from riskguard.access._control import PLATFORM_DOMAIN, AccessControl
from riskguard.access._decision import Decision, Engine, EngineKind
from riskguard.access._diff import PolicyDiff, diff_policies
from riskguard.access._explain import explain
from riskguard.access._lines import (
    FilePolicy,
    MemoryPolicy,
    PolicyLine,
    PolicySource,
    parse_policy_text,
)
from riskguard.access._lint import lint_files
from riskguard.access._model import ModelDef, parse_model, read_model
from riskguard.access._reload import PolicyWatcher, RedisReloadListener, RedisReloadNotifier
from riskguard.access._schema import read_schema
from riskguard.access._snapshot import Snapshot, load_snapshot, policy_hash
from riskguard.access._sql import SqlPolicy
from riskguard.access._tests import load_cases, run_cases
from riskguard.access._usage import least_privilege, observed_requests

__all__ = [
    "PLATFORM_DOMAIN",
    "AccessControl",
    "CompiledModel",
    "Decision",
    "Engine",
    "EngineKind",
    "FilePolicy",
    "MemoryPolicy",
    "ModelDef",
    "PolicyDiff",
    "PolicyLine",
    "PolicySource",
    "PolicyView",
    "PolicyWatcher",
    "RedisReloadListener",
    "RedisReloadNotifier",
    "Snapshot",
    "SqlPolicy",
    "diff_policies",
    "explain",
    "least_privilege",
    "lint_files",
    "load_cases",
    "load_snapshot",
    "observed_requests",
    "parse_model",
    "parse_policy_text",
    "policy_hash",
    "read_model",
    "read_schema",
    "recognise",
    "run_cases",
]
