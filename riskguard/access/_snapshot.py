"""A loaded policy: model, lines, checks, hash and the engine that decides on them.

A snapshot is immutable. Reloading builds a new one and swaps it in whole, so a request
sees the old or the new policy, never a mix, and decision caches die with their snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from riskguard.access._casbin import CasbinEngine
from riskguard.access._compile import CompiledModel, recognise
from riskguard.access._decision import Engine
from riskguard.access._index import CompiledEngine
from riskguard.access._lines import PolicyLine, PolicySource
from riskguard.access._model import ModelDef
from riskguard.access._roles import RoleGraphs, find_cycle
from riskguard.errors import PolicyError

__all__ = ["Snapshot", "check_lines", "load_snapshot", "policy_hash"]

_EFTS = ("allow", "deny")


@dataclass(frozen=True)
class Snapshot:
    """One consistent policy. ``fallback_reason`` says why the index could not compile the
    model (``None`` when it did)."""

    model: ModelDef
    lines: tuple[PolicyLine, ...]
    engine: Engine
    hash: str
    fallback_reason: str | None = None

    @cached_property
    def request_tokens(self) -> tuple[str, ...]:
        """The request tokens in order (``sub, dom, obj, act, owner, assignee``)."""
        return self.model.request["r"]

    @cached_property
    def attributes(self) -> frozenset[str]:
        """Request tokens beyond ``sub, dom, obj, act``: the keyword attributes."""
        return frozenset(self.request_tokens) - {"sub", "dom", "obj", "act"}


def policy_hash(model: ModelDef, lines: Sequence[PolicyLine]) -> str:
    """``sha256:<hex>`` over the model text and the policy lines (not their file layout:
    comments and blank lines do not change it)."""
    h = hashlib.sha256(model.text.encode("utf-8"))
    for pl in lines:
        h.update(b"\n" + "\x1f".join((pl.ptype, *pl.values)).encode("utf-8"))
    return "sha256:" + h.hexdigest()


def _error(pl: PolicyLine, message: str) -> PolicyError:
    return PolicyError(message, path=pl.source, line=pl.line or None)


def check_lines(model: ModelDef, lines: Sequence[PolicyLine]) -> None:
    """What Casbin would fail on late, or silently skip: unknown types, wrong field counts,
    unknown effects, role cycles, no ``p`` rule at all.

    :raises PolicyError: naming the file and line.
    """
    by_g: dict[str, list[PolicyLine]] = {}
    rules = 0
    for pl in lines:
        if pl.ptype in model.policy:
            tokens = model.policy[pl.ptype]
            if len(pl.values) != len(tokens):
                raise _error(
                    pl,
                    f"{pl.ptype} rule has {len(pl.values)} fields, the model defines "
                    f"{len(tokens)} ({', '.join(tokens)})",
                )
            if "eft" in tokens and pl.values[tokens.index("eft")] not in _EFTS:
                raise _error(
                    pl, f"unknown effect {pl.values[tokens.index('eft')]!r} (allow or deny)"
                )
            rules += pl.ptype == "p"
        elif pl.ptype in model.roles:
            arity = model.roles[pl.ptype].arity
            if len(pl.values) != arity:
                raise _error(
                    pl, f"{pl.ptype} grant has {len(pl.values)} fields, the model defines {arity}"
                )
            by_g.setdefault(pl.ptype, []).append(pl)
        else:
            known = ", ".join([*model.policy, *model.roles])
            raise _error(pl, f"unknown policy type {pl.ptype!r} (the model defines {known})")
    if rules == 0:
        src = lines[0].source if lines else None
        raise PolicyError("the policy has no p rule: it would deny everything", path=src)
    for g, glines in by_g.items():
        cycle = find_cycle(glines, model.roles[g].arity)
        if cycle:
            chain = " → ".join([c.values[0] for c in cycle] + [cycle[-1].values[1]])
            last = max(cycle, key=lambda c: c.line)  # the line that closes it, in file order
            raise PolicyError(
                f"role cycle: {chain}",
                path=last.source,
                line=last.line or None,
                hint="lines " + ", ".join(c.location for c in cycle),
            )


def load_snapshot(
    model: ModelDef, source: PolicySource, *, cache_size: int = 65_536, compiled: bool = True
) -> Snapshot:
    """Load, check and index a policy.

    :param compiled: ``False`` decides with ``casbin.Enforcer`` even for a model the
        index could compile (for comparisons).
    :raises PolicyError: the policy is invalid (file and line named).
    """
    lines = tuple(source.load())
    check_lines(model, lines)
    digest = policy_hash(model, lines)
    spec: CompiledModel | str = recognise(model) if compiled else "compilation turned off"
    if isinstance(spec, CompiledModel):
        g_lines = [pl for pl in lines if pl.ptype == spec.subject.g]
        graphs = RoleGraphs.from_lines(g_lines, model.roles[spec.subject.g].arity)
        engine: Engine = CompiledEngine(spec, lines, graphs, cache_size=cache_size)
        return Snapshot(model, lines, engine, digest)
    return Snapshot(model, lines, CasbinEngine(model, lines), digest, fallback_reason=spec)
