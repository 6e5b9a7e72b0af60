"""The shipped ``policies/`` files: each role's key permissions, the PII guarantees, owner
conditions, domains, the role hierarchy and deny-override; and Casbin agrees on all of it."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import casbin
import pytest

from riskguard.access import AccessControl, FilePolicy, MemoryPolicy, PolicyLine

POLICIES = Path(__file__).parents[2] / "policies"
MODEL = POLICIES / "model.conf"
POLICY = POLICIES / "policy.csv"

PII = ("customer.phone", "customer.address", "customer.id_number")
PLATFORM_ROLES = (
    "customer",
    "rider",
    "cs_agent",
    "risk_analyst",
    "auditor",
    "security_admin",
    "platform_admin",
)
MERCHANT_ROLES = ("merchant_owner", "merchant_staff")


@pytest.fixture(scope="module")
def ac() -> AccessControl:
    return AccessControl(MODEL, POLICY)


@pytest.fixture(scope="module")
def probes() -> AccessControl:
    """The shipped policy plus one probe subject per role holding only that role."""
    lines = FilePolicy(POLICY).load()
    extra = [("g", f"probe_{role}", role, "*") for role in PLATFORM_ROLES]
    extra += [("g", f"probe_{role}", role, "m:1001") for role in MERCHANT_ROLES]
    rows = [(pl.ptype, *pl.values) for pl in lines] + extra
    return AccessControl(MODEL, MemoryPolicy(rows))


def test_the_shipped_model_compiles(ac: AccessControl) -> None:
    assert ac.engine == "compiled", ac.fallback_reason


# (subject, domain, object, action, owner, assignee, allowed)
KEY_PERMISSIONS = [
    # customers: their own orders and data only
    ("alice", "m:1001", "order", "create", "alice", "", True),
    ("alice", "m:1001", "order", "create", "bob", "", False),
    ("alice", "m:1002", "order", "read", "alice", "", True),
    ("alice", "m:1002", "order", "read", "bob", "", False),
    ("alice", "m:1002", "order", "read", "", "", False),
    ("alice", "m:1001", "order", "refund", "alice", "", False),
    ("alice", "platform", "customer.id_number", "read", "alice", "", True),
    ("alice", "platform", "customer.id_number", "read", "bob", "", False),
    ("alice", "m:1001", "menu.item", "read", "", "", True),
    ("alice", "m:1001", "menu.item", "update", "", "", False),
    # riders: assigned orders and the contact data to deliver them
    ("rick", "m:1001", "order", "read", "alice", "rick", True),
    ("rick", "m:1001", "order", "read", "alice", "rita", False),
    ("rick", "m:1001", "order", "update_status", "alice", "rick", True),
    ("rick", "m:1001", "customer.phone", "read", "alice", "rick", True),
    ("rick", "m:1001", "customer.address", "read", "alice", "rick", True),
    ("rick", "m:1001", "customer.address", "read", "alice", "", False),
    ("rick", "m:1001", "customer.id_number", "read", "alice", "rick", False),
    ("rick", "m:1001", "customer.phone", "update", "alice", "rick", False),
    # merchant staff: their merchant's orders and menu, no PII
    ("sam", "m:1001", "order", "read", "alice", "", True),
    ("sam", "m:1001", "order", "update_status", "", "", True),
    ("sam", "m:1001", "order", "refund", "", "", False),
    ("sam", "m:1002", "order", "read", "", "", False),
    ("sam", "m:1001", "menu.item", "update", "", "", True),
    ("sam", "m:1001", "menu.price", "update", "", "", False),
    ("sam", "m:1001", "customer.masked", "read", "", "", True),
    ("sam", "m:1001", "customer.phone", "read", "", "", False),
    # merchant owners: all a staff member may, plus refunds, prices, staff, settlement
    ("mona", "m:1001", "order", "read", "", "", True),
    ("mona", "m:1001", "order", "refund", "", "", True),
    ("mona", "m:1001", "menu.price", "update", "", "", True),
    ("mona", "m:1001", "merchant.settlement", "read", "", "", True),
    ("mona", "m:1002", "order", "read", "", "", False),
    ("mona", "m:1001", "customer.address", "read", "", "", False),
    ("max", "m:1002", "order", "refund", "", "", True),
    ("max", "m:1001", "order", "refund", "", "", False),
    # customer service: every merchant's orders, the phone to call back
    ("carl", "m:1002", "order", "refund", "", "", True),
    ("carl", "m:1001", "customer.phone", "read", "alice", "", True),
    ("carl", "m:1001", "customer.phone", "update", "alice", "", False),
    ("carl", "m:1001", "customer.address", "read", "alice", "", False),
    ("carl", "m:1001", "customer.profile", "read", "", "", True),
    ("carl", "platform", "audit.log", "read", "", "", False),
    # risk analysts: fraud cases, orders, masked data; no PII in clear
    ("rose", "platform", "fraud.case", "update", "", "", True),
    ("rose", "m:1001", "fraud.case", "update", "", "", False),
    ("rose", "m:1001", "customer.masked", "read", "", "", True),
    ("rose", "m:1001", "customer.phone", "read", "", "", False),
    ("rose", "m:1001", "customer.account", "suspend", "", "", True),
    # auditors: read-only audit trail and policy
    ("aude", "platform", "audit.log", "read", "", "", True),
    ("aude", "platform", "audit.report", "read", "", "", True),
    ("aude", "platform", "audit.log", "update", "", "", False),
    ("aude", "platform", "policy", "read", "", "", True),
    ("aude", "platform", "policy", "update", "", "", False),
    ("aude", "m:1001", "order", "read", "", "", False),
    # security admins: inherit the auditor's reads; policy, grants, keys, revocation
    ("sean", "platform", "audit.checkpoint", "read", "", "", True),
    ("sean", "platform", "audit.log", "delete", "", "", False),
    ("sean", "platform", "policy", "update", "", "", True),
    ("sean", "platform", "key", "rotate", "", "", True),
    ("sean", "platform", "auth.token", "revoke", "", "", True),
    ("sean", "platform", "customer.id_number", "read", "", "", False),
    # platform admins: merchants, accounts, configuration; not everything
    ("pat", "m:1001", "merchant.account", "suspend", "", "", True),
    ("pat", "platform", "platform.config", "update", "", "", True),
    ("pat", "m:1001", "order", "read", "", "", True),
    ("pat", "m:1001", "order", "refund", "", "", False),
    ("pat", "platform", "policy", "update", "", "", False),
    ("pat", "platform", "key", "rotate", "", "", False),
    ("pat", "platform", "audit.log", "read", "", "", False),
    ("pat", "m:1001", "customer.phone", "read", "", "", False),
    # nobody: a subject with no grant
    ("mallory", "m:1001", "order", "read", "mallory", "mallory", False),
]


@pytest.mark.parametrize(
    "sub,dom,obj,act,owner,assignee,allowed",
    KEY_PERMISSIONS,
    ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}-{'allow' if r[6] else 'deny'}" for r in KEY_PERMISSIONS],
)
def test_key_permissions(
    ac: AccessControl,
    sub: str,
    dom: str,
    obj: str,
    act: str,
    owner: str,
    assignee: str,
    allowed: bool,
) -> None:
    assert ac.enforce(sub, dom, obj, act, owner=owner, assignee=assignee) is allowed


# Who may touch PII in clear, and on which condition (None: no condition).
PII_ACCESS = {
    ("customer", "customer.phone", "read"): "owner",
    ("customer", "customer.phone", "update"): "owner",
    ("customer", "customer.address", "read"): "owner",
    ("customer", "customer.address", "update"): "owner",
    ("customer", "customer.id_number", "read"): "owner",
    ("customer", "customer.id_number", "update"): "owner",
    ("rider", "customer.phone", "read"): "assignee",
    ("rider", "customer.address", "read"): "assignee",
    ("cs_agent", "customer.phone", "read"): None,
}
ACTS = ("read", "update", "create", "delete", "export", "*")
RELATIONS = ("owner", "assignee", "none")


def test_pii_is_reachable_only_as_documented(probes: AccessControl) -> None:
    """Every role, PII object, action and relation to the record: allowed exactly when the
    table above says so (least privilege, and the conditions hold)."""
    checked = 0
    for role in PLATFORM_ROLES + MERCHANT_ROLES:
        sub = f"probe_{role}"
        dom = "m:1001"
        for obj, act, rel in itertools.product(PII, ACTS, RELATIONS):
            owner = sub if rel == "owner" else "someone"
            assignee = sub if rel == "assignee" else "rider9"
            expected_cond = PII_ACCESS.get((role, obj, act), "never")
            expected = expected_cond is None or expected_cond == rel
            got = probes.enforce(sub, dom, obj, act, owner=owner, assignee=assignee)
            assert got is expected, (role, obj, act, rel)
            checked += 1
    assert checked == 9 * 3 * 6 * 3


def test_no_allow_rule_reaches_pii_through_a_pattern() -> None:
    """PII objects are granted only by exact allow rules: a pattern such as ``customer.*``
    or ``*`` in an allow would hand out every PII field at once."""
    for pl in FilePolicy(POLICY).load():
        if pl.ptype != "p" or pl.values[5] != "allow" or "*" not in pl.values[2]:
            continue
        prefix = pl.values[2].split("*", 1)[0]
        assert not any(obj.startswith(prefix) for obj in PII), pl.location


def test_platform_admin_is_not_everything(probes: AccessControl) -> None:
    denied = [
        ("platform", "audit.log", "read"),
        ("platform", "policy", "update"),
        ("platform", "access.grant", "update"),
        ("platform", "key", "rotate"),
        ("platform", "fraud.case", "update"),
        ("m:1001", "order", "refund"),
        ("m:1001", "menu.item", "update"),
    ]
    for dom, obj, act in denied:
        assert not probes.enforce("probe_platform_admin", dom, obj, act), (obj, act)


def test_deny_overrides_and_names_both_rules(ac: AccessControl) -> None:
    d = ac.decide("dave", "m:1001", "order", "read", owner="dave")
    assert not d.allowed
    assert d.rule is not None and d.rule.values[0] == "suspended"
    assert [r.values[0] for r in d.overridden] == ["customer"]
    assert d.reason == f"denied by {d.rule.location}, overriding {d.overridden[0].location}"
    lines = POLICY.read_text().splitlines()
    assert lines[d.rule.line - 1] == "p, suspended, *, *, *, *, deny"
    # without the condition holding there is nothing to override
    d = ac.decide("dave", "m:1001", "order", "read", owner="alice")
    assert not d.allowed and d.overridden == ()


def test_inherited_deny_binds_the_owner(ac: AccessControl) -> None:
    d = ac.decide("mona", "m:1001", "customer.phone", "read")
    assert not d.allowed and d.rule is not None
    assert d.rule.values[:3] == ("merchant_staff", "*", "customer.phone")
    assert {"merchant_owner", "merchant_staff"} <= set(d.roles)


def test_allow_names_its_line(ac: AccessControl) -> None:
    d = ac.decide("sean", "platform", "audit.log", "read")
    assert d.allowed and d.rule is not None
    assert d.rule.values == ("auditor", "platform", "audit.*", "read", "*", "allow")
    assert d.reason == f"allowed by policy.csv:{d.rule.line}"
    assert "auditor" in d.roles and "security_admin" in d.roles


def test_merchant_roles_stay_in_their_domain(ac: AccessControl) -> None:
    for dom in ("m:1002", "platform", "*", "m:9999"):
        assert not ac.enforce("mona", dom, "order", "read"), dom
        assert not ac.enforce("sam", dom, "menu.item", "read"), dom


def test_every_role_named_in_a_grant_has_a_rule() -> None:
    lines: list[PolicyLine] = FilePolicy(POLICY).load()
    subjects = {pl.values[0] for pl in lines if pl.ptype == "p"}
    granted = {pl.values[1] for pl in lines if pl.ptype == "g"}
    assert granted <= subjects, granted - subjects


def test_casbin_agrees_on_a_sample_of_the_request_space(ac: AccessControl) -> None:
    reference = casbin.Enforcer(str(MODEL), str(POLICY))
    lines = FilePolicy(POLICY).load()
    subjects = [*sorted({pl.values[0] for pl in lines if pl.ptype == "g"}), "mallory"]
    objects = [*sorted({pl.values[2] for pl in lines if pl.ptype == "p"}), "customer"]
    objects += ["audit.log", "menu.price", "customer.phone.x"]
    acts = [*sorted({pl.values[3] for pl in lines if pl.ptype == "p"}), "delete"]
    domains = ["m:1001", "m:1002", "platform", "*"]
    rng = random.Random(7)
    allowed = 0
    for _ in range(1500):
        sub = rng.choice(subjects)
        req = (
            sub,
            rng.choice(domains),
            rng.choice(objects),
            rng.choice(acts),
            rng.choice([sub, "bob", ""]),
            rng.choice([sub, "rita", ""]),
        )
        expected = reference.enforce(*req)
        assert ac.enforce(*req[:4], owner=req[4], assignee=req[5]) is expected, req
        allowed += expected
    assert 30 < allowed < 1470
