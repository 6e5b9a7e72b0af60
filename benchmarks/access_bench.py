"""Benchmark ``riskguard.access.AccessControl`` against ``casbin.Enforcer.enforce``, in one run.

::

    python benchmarks/access_bench.py [--requests 200000] [--casbin-scale 1.0]

On generated RBAC-with-domains policies of 1.1k, 11k and 110k lines for the shipped model
(``policies/model.conf``: domains, role hierarchy, ``*`` grants, ``keyMatch`` patterns,
owner conditions, denies), laid out as Casbin's own benchmark (one rule per role, ten users
per role), decisions per second of

* ``AccessControl.enforce`` (compiled index, LRU cache on, no audit recorder), over the
  full request stream;
* ``casbin.Enforcer.enforce`` on the same files, over a sample of the same stream (Casbin
  scans every rule: about a quarter of a second per decision at 110k lines).

Two streams: Zipf over subjects and objects (realistic repetition) and one where no
request repeats. The riskguard and Casbin decisions on the sampled requests are compared
in the same run: the difference count must be 0. Last, the load time of a 20k-line policy
(goal ≤ 1 s). Goals from the issue: ≥ 20x at 11k, ≥ 50x at 110k. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import casbin
from rich.console import Console
from rich.table import Table

from riskguard.access import AccessControl

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 150)
MODEL = Path(__file__).resolve().parents[1] / "policies" / "model.conf"
USERS_PER_DOMAIN = 100  # merchants have a hundred staff at most: many small domains
GOALS = {1_100: None, 11_000: 20.0, 110_000: 50.0}
# Casbin requests sampled per stream, per policy size (scaled by --casbin-scale)
CASBIN_SAMPLE = {1_100: 400, 11_000: 60, 110_000: 6}
# busiest domains warmed up for casbin, per policy size
WARM_DOMAINS = {1_100: 10, 11_000: 5, 110_000: 1}

Request = tuple[str, str, str, str, str, str]


class Policy:
    """A generated policy: ``roles`` roles with one rule each, ten users per role."""

    def __init__(self, size: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        n_roles = size // 11
        n_domains = max(10, (size - n_roles) // USERS_PER_DOMAIN)
        self.domains = [f"m:{1000 + i}" for i in range(n_domains)]
        self.domains.append("platform")
        self.roles = [f"role{i}" for i in range(n_roles)]
        lines: list[str] = []
        for i, role in enumerate(self.roles):
            kind = i % 10
            if kind == 1:  # a prefix pattern in one merchant domain
                lines.append(f"p, {role}, {self.domains[i % 10]}, data{i}.*, *, *, allow")
            elif kind == 2:  # an owner condition
                lines.append(f"p, {role}, *, data{i}, write, owner, allow")
            elif kind == 3:  # a deny against the previous role's data
                lines.append(f"p, {role}, *, data{i - 1}.secret, *, *, deny")
            else:
                act = "read" if kind % 2 == 0 else "*"
                lines.append(f"p, {role}, *, data{i}, {act}, *, allow")
        hierarchy = [
            f"g, {self.roles[i]}, {self.roles[i + 1]}, *" for i in range(0, n_roles - 1, 10)
        ]
        n_users = size - len(lines) - len(hierarchy)
        self.users: list[str] = []
        self.home: dict[str, tuple[int, str]] = {}
        for j in range(n_users):
            user, role_i = f"user{j}", rng.randrange(n_roles)
            home = self.domains[j % len(self.domains)]
            dom = "*" if j % 200 == 0 else home
            lines.append(f"g, {user}, {self.roles[role_i]}, {dom}")
            self.users.append(user)
            self.home[user] = (role_i, home)
        self.text = "\n".join(lines + hierarchy) + "\n"
        self.size = len(lines) + len(hierarchy)

    def request(self, rng: random.Random, user: str, obj_rank: int) -> Request:
        role_i, dom = self.home[user]
        # mostly the user's own role's data, sometimes anything
        obj_i = role_i if rng.random() < 0.7 else obj_rank % len(self.roles)
        obj = f"data{obj_i}" + rng.choice(["", "", "", "", ".x", ".secret"])
        if rng.random() < 0.1:
            dom = rng.choice(self.domains)
        act = "read" if rng.random() < 0.8 else "write"
        owner = user if rng.random() < 0.5 else "someone"
        return (user, dom, obj, act, owner, "")


def zipf_stream(policy: Policy, n: int, seed: int, s: float = 1.1) -> list[Request]:
    rng = random.Random(seed)
    users = policy.users[:]
    rng.shuffle(users)
    weights = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(len(users))))
    obj_weights = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(len(policy.roles))))

    def pick(cum: list[float]) -> int:
        return bisect.bisect_left(cum, rng.random() * cum[-1])

    return [policy.request(rng, users[pick(weights)], pick(obj_weights)) for _ in range(n)]


def unique_stream(policy: Policy, n: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    seen: set[Request] = set()
    out: list[Request] = []
    while len(out) < n:
        user = rng.choice(policy.users)
        req = policy.request(rng, user, rng.randrange(len(policy.roles)))
        if req not in seen:
            seen.add(req)
            out.append(req)
    return out


def run_riskguard(ac: AccessControl, stream: list[Request]) -> tuple[float, list[bool]]:
    enforce = ac.enforce
    out: list[bool] = []
    append = out.append
    t0 = time.perf_counter()
    for sub, dom, obj, act, owner, assignee in stream:
        append(enforce(sub, dom, obj, act, owner=owner, assignee=assignee))
    return time.perf_counter() - t0, out


def run_casbin(e: casbin.Enforcer, sample: list[Request]) -> tuple[float, list[bool]]:
    out: list[bool] = []
    t0 = time.perf_counter()
    for req in sample:
        out.append(bool(e.enforce(*req)))
    return time.perf_counter() - t0, out


def bench_size(size: int, args: argparse.Namespace, table: Table, folder: Path) -> int:
    policy = Policy(size)
    path = folder / f"policy-{size}.csv"
    path.write_text(policy.text, encoding="utf-8")
    t0 = time.perf_counter()
    ac = AccessControl(MODEL, path)
    rg_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    e = casbin.Enforcer(str(MODEL), str(path))
    cb_load = time.perf_counter() - t0
    console.print(
        f"[bold]{policy.size:,} lines[/] ({len(policy.domains)} domains): riskguard load "
        f"{rg_load:.2f} s ({ac.engine}); casbin load {cb_load:.2f} s"
    )
    n_casbin = max(2, int(CASBIN_SAMPLE[size] * args.casbin_scale))
    diffs_total = 0
    streams = (
        ("zipf", zipf_stream(policy, args.requests, seed=size)),
        ("no repetition", unique_stream(policy, args.requests // 2, seed=size + 1)),
    )
    # Casbin builds a domain's role graph, and a role object for every rule's subject, on
    # the first request in that domain: about a minute per domain at 110k lines. That cost
    # is paid once per process, so the timing excludes it: warm the busiest domains (and
    # "*", which every request consults) and sample the requests in them; a decision scans
    # every rule whatever its domain.
    counts = Counter(r[1] for r in streams[0][1])
    busiest = [d for d, _ in counts.most_common(WARM_DOMAINS[size])]
    t0 = time.perf_counter()
    for dom in [*busiest, "*"]:
        e.enforce(policy.users[0], dom, "data0", "read", "", "")
    console.print(
        f"  casbin warm-up: {time.perf_counter() - t0:.1f} s for {len(busiest)} domain(s) "
        "and '*' (excluded from the timing)"
    )
    for name, stream in streams:
        ac.snapshot.engine.cache_clear()  # type: ignore[attr-defined]
        rg_time, rg_out = run_riskguard(ac, stream)
        in_warm = [i for i, r in enumerate(stream) if r[1] in busiest]
        step = max(1, len(in_warm) // n_casbin)
        idx = in_warm[::step][:n_casbin]
        sample = [stream[i] for i in idx]
        console.print(
            f"  {name}: casbin sample of {len(idx)} from the {len(in_warm):,} requests "
            f"({len(in_warm) / len(stream):.1%}) in the warmed domains"
        )
        cb_time, cb_out = run_casbin(e, sample)
        diffs = sum(rg_out[i] != c for i, c in zip(idx, cb_out, strict=True))
        diffs_total += diffs
        rg_rate = len(stream) / rg_time
        cb_rate = len(idx) / cb_time
        allowed = sum(rg_out) / len(rg_out)
        goal = GOALS[size]
        ratio = rg_rate / cb_rate
        verdict = "" if goal is None else ("[green]met[/]" if ratio >= goal else "[red]missed[/]")
        table.add_row(
            f"{policy.size:,}",
            name,
            f"{len(stream):,}",
            f"{rg_rate:,.0f}",
            f"{1e6 / rg_rate:.1f}",
            f"{len(idx)}",
            f"{cb_rate:,.1f}",
            f"{1e3 / cb_rate:.2f}",
            f"{ratio:,.0f}x",
            "-" if goal is None else f"≥ {goal:.0f}x {verdict}",
            f"{allowed:.0%}",
            str(diffs),
        )
    return diffs_total


def bench_load(folder: Path) -> tuple[float, float, int]:
    policy = Policy(22_000, seed=5)
    lines = policy.text.splitlines()[:20_000]
    path = folder / "policy-20k.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        AccessControl(MODEL, path)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    casbin.Enforcer(str(MODEL), str(path))
    return best, time.perf_counter() - t0, len(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000, help="riskguard zipf requests")
    ap.add_argument("--casbin-scale", type=float, default=1.0, help="scale the casbin samples")
    ap.add_argument("--sizes", default="1100,11000,110000")
    args = ap.parse_args()
    console.print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"pycasbin {getattr(casbin, '__version__', '?')}; model {MODEL.name}"
    )
    table = Table(title="decisions per second: riskguard vs casbin.Enforcer.enforce")
    for col in (
        "policy lines",
        "stream",
        "requests",
        "riskguard dec/s",
        "µs/dec",
        "casbin sample",
        "casbin dec/s",
        "ms/dec",
        "ratio",
        "goal",
        "allowed",
        "differences",
    ):
        table.add_column(col, justify="right")
    diffs = 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            diffs += bench_size(size, args, table, Path(tmp))
        load, cb_load, n = bench_load(Path(tmp))
    console.print(table)
    verdict = "[green]met[/]" if load <= 1.0 else "[red]missed[/]"
    console.print(
        f"policy load, {n:,} lines: riskguard {load:.3f} s (goal ≤ 1 s: {verdict}); "
        f"casbin.Enforcer {cb_load:.3f} s"
    )
    colour = "green" if diffs == 0 else "red"
    console.print(f"decision differences against casbin: [{colour}]{diffs}[/]")
    console.print(f"total time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
