"""The fallback: ``casbin.Enforcer``, unchanged, for models the index cannot compile."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import casbin  # type: ignore[import-untyped]
from casbin.persist.adapter import Adapter  # type: ignore[import-untyped]

from riskguard.access._decision import Decision, EngineKind
from riskguard.access._lines import PolicyLine
from riskguard.access._model import ModelDef
from riskguard.errors import PolicyError

__all__ = ["CasbinEngine", "LinesAdapter", "casbin_errors"]


@contextmanager
def casbin_errors(path: str, what: str) -> Iterator[None]:
    """Map whatever Casbin raises to :class:`PolicyError` naming ``path``."""
    try:
        yield
    except PolicyError:
        raise
    except Exception as exc:
        raise PolicyError(f"{what}: {type(exc).__name__}: {exc}", path=path) from exc


class LinesAdapter(Adapter):  # type: ignore[misc]
    """A Casbin adapter serving already-parsed lines, exactly as Casbin's file adapter would
    load them (same order, same values)."""

    def __init__(self, lines: Sequence[PolicyLine]) -> None:
        self._lines = list(lines)

    def load_policy(self, model: Any) -> None:
        for pl in self._lines:
            sec = pl.ptype[0]
            if sec in model.model and pl.ptype in model.model[sec]:
                model.model[sec][pl.ptype].policy.append(list(pl.values))


class CasbinEngine:
    """Every decision by ``casbin.Enforcer.enforce_ex`` (serialised: the enforcer mutates
    its role managers while deciding). The rule Casbin names is mapped back to its line."""

    kind: EngineKind = "casbin"

    def __init__(self, model: ModelDef, lines: Sequence[PolicyLine]) -> None:
        self.model = model
        with casbin_errors(model.path, "Casbin refused the model or policy"):
            cm = casbin.Enforcer.new_model(text=model.text)
            self.enforcer = casbin.Enforcer(cm, LinesAdapter(lines))
        self._lock = threading.Lock()
        self._by_values: dict[tuple[str, ...], PolicyLine] = {}
        for pl in lines:
            if pl.ptype == "p":
                self._by_values.setdefault(pl.values, pl)
        policy = model.policy.get("p", ())
        self._eft = policy.index("eft") if "eft" in policy else None

    def decide(self, rvals: tuple[str, ...]) -> Decision:
        """:raises PolicyError: Casbin failed on this request (a broken matcher)."""
        with self._lock, casbin_errors(self.model.path, "Casbin failed to decide"):
            allowed, explain = self.enforcer.enforce_ex(*rvals)
        rule = self._by_values.get(tuple(explain)) if explain else None
        if rule is None:
            return Decision(bool(allowed), engine="casbin")
        is_deny = self._eft is not None and rule.values[self._eft] == "deny"
        if is_deny:
            return Decision(bool(allowed), denies=(rule,), engine="casbin")
        return Decision(bool(allowed), allows=(rule,), engine="casbin")
