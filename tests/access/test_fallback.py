"""Models outside the compiled family run on ``casbin.Enforcer`` unchanged, and say why."""

from __future__ import annotations

import random
from pathlib import Path

import casbin
import pytest

from riskguard.access import AccessControl, CompiledModel, MemoryPolicy, parse_model, recognise
from riskguard.errors import PolicyError

POLICIES = Path(__file__).parents[2] / "policies"

HEAD = """\
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act, eft

[role_definition]
g = _, _, _

[policy_effect]
e = {effect}

[matchers]
m = {matcher}
"""
AND_DENY = "some(where (p.eft == allow)) && !some(where (p.eft == deny))"
POLICY = """\
p, admin, d1, /orders/*, read, allow
p, admin, *, /orders/secret, read, deny
p, clerk, d1, /orders/:id, read, allow
p, clerk, d2, /menu, write, allow
p, alice, d2, /orders/1, write, allow
g, bob, admin, d1
g, carol, clerk, d1
g, carol, clerk, d2
g, dave, clerk, *
g, clerk, admin, d2
"""

# (name, effect, matcher, words in the reason)
OUTSIDE = [
    (
        "regexMatch",
        AND_DENY,
        "g(r.sub, p.sub, r.dom) && r.dom == p.dom && regexMatch(r.obj, p.obj) && r.act == p.act",
        "regexMatch",
    ),
    (
        "keyMatch2",
        AND_DENY,
        "g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch2(r.obj, p.obj) && r.act == p.act",
        "keyMatch2",
    ),
    (
        "domain from the rule",
        AND_DENY,
        "g(r.sub, p.sub, p.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act",
        "clause",
    ),
    (
        "negation",
        AND_DENY,
        'g(r.sub, p.sub, r.dom) && !(r.act == "write") && r.obj == p.obj && r.act == p.act',
        "clause",
    ),
    (
        "superuser escape",
        AND_DENY,
        'g(r.sub, p.sub, r.dom) && r.obj == p.obj && r.act == p.act || r.sub == "root"',
        "clause",
    ),
    (
        "priority effect",
        "priority(p.eft) || deny",
        "g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act",
        "priority",
    ),
    (
        "no subject clause",
        AND_DENY,
        "r.sub == p.sub && r.dom == p.dom && r.obj == p.obj && r.act == p.act",
        "subject clause",
    ),
]


@pytest.mark.parametrize(
    "effect,matcher,words", [o[1:] for o in OUTSIDE], ids=[o[0] for o in OUTSIDE]
)
def test_unrecognised_models_decide_as_casbin(
    tmp_path: Path, effect: str, matcher: str, words: str
) -> None:
    model = tmp_path / "model.conf"
    policy = tmp_path / "policy.csv"
    model.write_text(HEAD.format(effect=effect, matcher=matcher), encoding="utf-8")
    policy.write_text(POLICY, encoding="utf-8")
    ac = AccessControl(model, policy)
    assert ac.engine == "casbin"
    assert ac.fallback_reason is not None and words in ac.fallback_reason
    reference = casbin.Enforcer(str(model), str(policy))
    rng = random.Random(3)
    subjects = ["alice", "bob", "carol", "dave", "root", "admin", "clerk", "eve"]
    objects = ["/orders/1", "/orders/secret", "/orders/", "/menu", "/orders/:id", "/x"]
    allowed = 0
    for _ in range(400):
        req = (
            rng.choice(subjects),
            rng.choice(["d1", "d2", "*"]),
            rng.choice(objects),
            rng.choice(["read", "write"]),
        )
        expected, explain = reference.enforce_ex(*req)
        d = ac.decide(*req)
        assert d.allowed == expected, req
        assert d.engine == "casbin"
        if explain:  # the rule Casbin names, mapped back to its line
            named = [r for r in (*d.allows, *d.denies) if list(r.values) == explain]
            assert named and named[0].location.startswith("policy.csv:")
        allowed += expected
    assert 0 < allowed < 400


def test_compilation_can_be_turned_off(tmp_path: Path) -> None:
    ac = AccessControl(POLICIES / "model.conf", POLICIES / "policy.csv", compiled=False)
    assert ac.engine == "casbin" and ac.fallback_reason == "compilation turned off"
    compiled = AccessControl(POLICIES / "model.conf", POLICIES / "policy.csv")
    d = ac.decide("dave", "m:1001", "order", "read", owner="dave")
    assert not d.allowed and d.rule is not None and d.rule.values[0] == "suspended"
    assert d.rule == compiled.decide("dave", "m:1001", "order", "read", owner="dave").rule
    for req in [
        ("alice", "m:1001", "order", "read", "alice", ""),
        ("rick", "m:1001", "customer.phone", "read", "alice", "rick"),
        ("pat", "platform", "audit.log", "read", "", ""),
    ]:
        kw = {"owner": req[4], "assignee": req[5]}
        assert ac.enforce(*req[:4], **kw) == compiled.enforce(*req[:4], **kw)


def test_the_shipped_model_is_recognised() -> None:
    spec = recognise(parse_model((POLICIES / "model.conf").read_text()))
    assert isinstance(spec, CompiledModel)
    assert spec.effect == "allow_and_deny"
    assert spec.subject.domains == ((True, 1), (False, "*"))
    assert [(f.kind, spec.policy[f.p_index]) for f in spec.fields] == [
        ("wild", "dom"),
        ("key", "obj"),
        ("wild", "act"),
    ]
    assert spec.cond is not None and set(spec.cond.cases) == {"*", "owner", "assignee"}


@pytest.mark.parametrize(
    "matcher,words",
    [
        ("g(r.sub, p.sub, r.dom) && g(r.sub, p.sub, r.dom) && r.obj == p.obj", "two subject"),
        ("g(r.sub, p.sub, r.dom) && r.obj == p.obj && r.act == p.obj", "two clauses"),
        ('g(r.sub, p.sub, r.dom) && r.obj == p.obj && p.eft == "allow"', "p.eft"),
        ("g(r.sub, p.sub, r.dom) && r.obj == p.obj && eval(p.act)", "eval"),
        ("g(r.sub, p.sub, r.dom) || g(r.obj, p.sub, r.dom)", "clause"),
    ],
)
def test_recognise_explains_what_it_cannot_compile(matcher: str, words: str) -> None:
    reason = recognise(parse_model(HEAD.format(effect=AND_DENY, matcher=matcher)))
    assert isinstance(reason, str) and words in reason


def test_a_casbin_failure_while_deciding_is_a_policy_error(tmp_path: Path) -> None:
    model = tmp_path / "model.conf"
    matcher = "g(r.sub, p.sub, r.dom) && ipMatch(r.obj, p.obj) && r.act == p.act"
    model.write_text(HEAD.format(effect=AND_DENY, matcher=matcher), encoding="utf-8")
    ac = AccessControl(model, MemoryPolicy("p, admin, d1, 10.0.0.0/8, read, allow"))
    assert ac.engine == "casbin"
    with pytest.raises(PolicyError) as err:
        ac.enforce("admin", "d1", "not-an-address", "read")
    assert err.value.path == str(model) and "Casbin failed to decide" in err.value.message
