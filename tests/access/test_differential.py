"""The compiled index decides exactly as ``casbin.Enforcer(model, policy)`` on the same files.

Hypothesis draws a model of the family (the shipped one and variants: other clause orders,
wildcard literals, effects, no domains, condition alternatives), a random policy (rules,
role graphs with multi-level, domain-scoped and ``*`` inheritance, chains past Casbin's hop
limit) and a seed; each example then checks a few hundred random requests against Casbin,
so that one run compares 180k requests. Casbin's own file adapter reads the
files, so the parsing is compared too.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import casbin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskguard.access import AccessControl

SHIPPED_MODEL = (Path(__file__).parents[2] / "policies" / "model.conf").read_text()

USERS = ["u0", "u1", "u2", "u3"]
ROLES = ["r0", "r1", "r2", "r3", "r4", "r5"]
NODES = USERS + ROLES  # g edges go from a lower to a higher index: no cycles
CHAIN = [f"c{i}" for i in range(12)]  # a chain longer than Casbin's 9 hops
G_DOMAINS = ["d0", "d1", "*", "platform"]
R_DOMAINS = ["d0", "d1", "*", "platform", "d2", ""]
P_VALUES = {
    "sub": [*ROLES, *ROLES, "u0", "u1", "c3", "c9", "c10", "c11"],
    "dom": ["*", "*", "d0", "d1", "platform"],
    "obj": ["o1", "o1.a", "o2", "x", "o1.*", "o*", "*", "o1.a*zz", "", "o1.a.b"],
    "act": ["read", "write", "*", "any"],
    "eft": ["allow", "allow", "allow", "deny"],
}
R_OBJ = ["o1", "o1.a", "o1.ab", "o1.a.b", "o2", "x", "", "o1.*", "*", "o", "o1."]
R_ACT = ["read", "write", "*", "any", ""]


@dataclass(frozen=True)
class Variant:
    name: str
    text: str
    request: tuple[str, ...]
    policy: tuple[str, ...]
    conds: tuple[str, ...] = ()
    arity: int = 3


def _model(r: str, p: str, g: str | None, e: str, m: str) -> str:
    role = f"[role_definition]\ng = {g}\n\n" if g else ""
    return (
        f"[request_definition]\nr = {r}\n\n[policy_definition]\np = {p}\n\n{role}"
        f"[policy_effect]\ne = {e}\n\n[matchers]\nm = {m}\n"
    )


ALLOW_AND_DENY = "some(where (p.eft == allow)) && !some(where (p.eft == deny))"
VARIANTS = [
    Variant(
        "shipped",
        SHIPPED_MODEL,
        ("sub", "dom", "obj", "act", "owner", "assignee"),
        ("sub", "dom", "obj", "act", "cond", "eft"),
        ("*", "owner", "assignee"),
    ),
    Variant(
        "domain-only-exact",
        _model(
            "sub, dom, obj, act",
            "sub, dom, obj, act, eft",
            "_, _, _",
            ALLOW_AND_DENY,
            "g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch(r.obj, p.obj) && r.act == p.act",
        ),
        ("sub", "dom", "obj", "act"),
        ("sub", "dom", "obj", "act", "eft"),
    ),
    Variant(
        "reordered-allow-override",
        _model(
            "act, obj, owner, dom, sub",
            "eft, act, sub, obj, dom, cond",
            "_, _, _",
            "some(where (p.eft == allow))",
            'keyMatch(r.obj, p.obj) && (r.act == p.act || p.act == "*" || p.act == "any") '
            '&& (g(r.sub, p.sub, "*") || g(r.sub, p.sub, r.dom)) '
            '&& (r.dom == p.dom || "*" == p.dom) '
            '&& ((r.sub == r.owner && p.cond == "mine") || p.cond == "*")',
        ),
        ("act", "obj", "owner", "dom", "sub"),
        ("eft", "act", "sub", "obj", "dom", "cond"),
        ("*", "mine"),
    ),
    Variant(
        "deny-override-exact-obj",
        _model(
            "sub, dom, obj, act",
            "sub, dom, obj, act, eft",
            "_, _, _",
            "!some(where (p.eft == deny))",
            '(g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "platform")) '
            '&& (p.dom == "*" || r.dom == p.dom) && r.obj == p.obj '
            '&& (p.act == "*" || r.act == p.act)',
        ),
        ("sub", "dom", "obj", "act"),
        ("sub", "dom", "obj", "act", "eft"),
    ),
    Variant(
        "no-domains-two-pair-condition",
        _model(
            "sub, obj, act, owner, assignee",
            "sub, obj, act, cond, eft",
            "_, _",
            ALLOW_AND_DENY,
            "g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && (p.act == '*' || r.act == p.act) "
            '&& (p.cond == "*" || (p.cond == "both" && r.owner == r.sub && '
            'r.assignee == r.sub) || (p.cond == "either" && r.owner == r.sub) '
            '|| (p.cond == "either" && r.assignee == r.sub))',
        ),
        ("sub", "obj", "act", "owner", "assignee"),
        ("sub", "obj", "act", "cond", "eft"),
        ("*", "both", "either"),
        arity=2,
    ),
]
VARIANTS.append(
    Variant(
        "subject-and-condition-only",
        _model(
            "sub, dom, obj, act, owner",
            "sub, cond, eft",
            "_, _, _",
            ALLOW_AND_DENY,
            'g(r.sub, p.sub, r.dom) && (p.cond == "*" || (p.cond == "owner" && r.owner == r.sub))',
        ),
        ("sub", "dom", "obj", "act", "owner"),
        ("sub", "cond", "eft"),
        ("*", "owner"),
    )
)
SHIPPED, OTHERS = VARIANTS[0], VARIANTS[1:]


@dataclass(frozen=True)
class Case:
    variant: Variant
    rules: tuple[tuple[str, ...], ...]
    grants: tuple[tuple[str, ...], ...]
    seed: int


def _value(draw: st.DrawFn, variant: Variant, token: str) -> str:
    if token == "cond":
        return draw(st.sampled_from([*variant.conds, "*"]))
    return draw(st.sampled_from(P_VALUES[token]))


@st.composite
def cases(draw: st.DrawFn, variants: list[Variant]) -> Case:
    variant = draw(st.sampled_from(variants))
    n_rules = draw(st.integers(1, 10))
    rules = tuple(tuple(_value(draw, variant, t) for t in variant.policy) for _ in range(n_rules))
    grants: list[tuple[str, ...]] = []
    for _ in range(draw(st.integers(0, 10))):
        a = draw(st.integers(0, len(NODES) - 2))
        b = draw(st.integers(a + 1, len(NODES) - 1))
        grant = (NODES[a], NODES[b])
        if variant.arity == 3:
            grant += (draw(st.sampled_from(G_DOMAINS)),)
        grants.append(grant)
    if draw(st.booleans()):
        dom = (draw(st.sampled_from(["*", "d0"])),) if variant.arity == 3 else ()
        entry = draw(st.sampled_from(["u0", "u1", "r0"]))
        grants.append((entry, CHAIN[0], *dom))
        grants.extend((CHAIN[i], CHAIN[i + 1], *dom) for i in range(len(CHAIN) - 1))
    return Case(variant, rules, tuple(grants), draw(st.integers(0, 2**32)))


def _write(case: Case, folder: Path) -> tuple[Path, Path]:
    model = folder / "model.conf"
    policy = folder / "policy.csv"
    model.write_text(case.variant.text, encoding="utf-8")
    rows = ["# generated"]
    rows += ["p, " + ", ".join(r) for r in case.rules]
    rows += ["g, " + ", ".join(g) for g in case.grants]
    policy.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model, policy


def _near(rng: random.Random, value: str, pool: list[str]) -> str:
    """A request value the rule value matches (often), or any value of the pool."""
    if rng.random() < 0.25 or value in ("*", "any"):
        return rng.choice(pool)
    if "*" in value:  # a keyMatch pattern: the prefix and something after it
        return value[: value.index("*")] + rng.choice(["", "a", ".b", "*"])
    return value


def _request(rng: random.Random, case: Case) -> dict[str, str]:
    """Half the requests aim at a random rule (its subject or a user, its values), half are
    drawn from the pools, so that both outcomes and all clauses are exercised."""
    variant = case.variant
    values = {
        "sub": rng.choice([*USERS, *USERS, *ROLES, "c0", "zz", ""]),
        "dom": rng.choice(R_DOMAINS),
        "obj": rng.choice(R_OBJ),
        "act": rng.choice(R_ACT),
    }
    if rng.random() < 0.5:
        rule = dict(zip(variant.policy, rng.choice(case.rules), strict=True))
        if rng.random() < 0.4:
            values["sub"] = rule["sub"]
        for token, pool in (("dom", R_DOMAINS), ("obj", R_OBJ), ("act", R_ACT)):
            if token in rule:
                values[token] = _near(rng, rule[token], pool)
    sub = values["sub"]
    for extra in ("owner", "assignee"):
        values[extra] = rng.choice([sub, sub, "u1", ""])
    return {t: values[t] for t in variant.request}


def _compare(case: Case, n_requests: int, stats: Counter[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model, policy = _write(case, Path(tmp))
        reference = casbin.Enforcer(str(model), str(policy))
        ours = AccessControl(model, policy, cache_size=256)
        assert ours.engine == "compiled", ours.fallback_reason
        engine = ours.snapshot.engine
        rng = random.Random(case.seed)
        for _ in range(n_requests):
            req = _request(rng, case)
            rvals = tuple(req.values())
            expected, explain = reference.enforce_ex(*rvals)
            got = engine.decide(rvals)
            assert got.allowed == expected, (req, got, explain)
            if explain:  # the rule Casbin names is among the rules we report
                ours_rules = {r.values for r in (*got.allows, *got.denies)}
                assert tuple(explain) in ours_rules, (req, got, explain)
            stats["requests"] += 1
            stats["allowed"] += expected
        # the public path (context-free, keyword attributes) agrees too
        for _ in range(20):
            req = _request(rng, case)
            if not req["sub"]:
                continue
            attrs = {k: v for k, v in req.items() if k not in ("sub", "dom", "obj", "act")}
            got_public = ours.enforce(
                req["sub"], req.get("dom", "platform"), req["obj"], req["act"], **attrs
            )
            rvals = tuple({**req, "dom": req.get("dom", "platform")}.get(t, "") for t in req)
            assert got_public == reference.enforce(*rvals), req


def _run(variants: list[Variant], examples: int, per_example: int) -> Counter[str]:
    stats: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cases(variants))
    def check(case: Case) -> None:
        _compare(case, per_example, stats)

    check()
    return stats


def test_shipped_model_on_random_policies() -> None:
    stats = _run([SHIPPED], examples=250, per_example=400)
    assert stats["requests"] >= 100_000
    # the requests exercise both outcomes, not just denies
    assert 0.05 < stats["allowed"] / stats["requests"] < 0.95


def test_model_variants_on_random_policies() -> None:
    stats = _run(OTHERS, examples=200, per_example=400)
    assert stats["requests"] >= 80_000
    assert 0.05 < stats["allowed"] / stats["requests"] < 0.95
