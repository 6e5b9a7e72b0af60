"""The resource schema (``policies/resources.toml``): the objects rules may name, their
actions, and which objects hold personal data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from riskguard.access._toml import read_toml
from riskguard.errors import PolicyError

__all__ = ["DEFAULT_PII", "ResourceSchema", "read_schema"]

#: PII objects when no schema is given (the shipped model's).
DEFAULT_PII = frozenset({"customer.phone", "customer.address", "customer.id_number"})


@dataclass(frozen=True)
class ResourceSchema:
    """Objects and their actions; ``pii`` the objects holding personal data."""

    actions: dict[str, frozenset[str]]
    pii: frozenset[str]
    path: str = "<schema>"


def read_schema(path: str | Path) -> ResourceSchema:
    """Read ``[objects."<name>"]`` tables with ``actions = [...]`` and ``pii = true|false``.

    :raises PolicyError: the file is missing, not TOML or malformed (file and line).
    """
    p = Path(path)
    src = str(p)
    _, doc = read_toml(p, "resource schema")
    objects = doc.get("objects")
    if not isinstance(objects, dict) or not objects:
        raise PolicyError('the schema declares no [objects."NAME"]', path=src)
    actions: dict[str, frozenset[str]] = {}
    pii: set[str] = set()
    for name, spec in objects.items():
        acts = spec.get("actions") if isinstance(spec, dict) else None
        if not isinstance(acts, list) or not all(isinstance(a, str) for a in acts) or not acts:
            raise PolicyError(f'object {name!r} needs actions = ["read", ...]', path=src)
        extra = sorted(set(spec) - {"actions", "pii"})
        if extra:
            raise PolicyError(f"object {name!r} has an unknown key {extra[0]!r}", path=src)
        if not isinstance(spec.get("pii", False), bool):
            raise PolicyError(f"object {name!r}: pii is true or false", path=src)
        actions[name] = frozenset(acts)
        if spec.get("pii", False):
            pii.add(name)
    return ResourceSchema(actions, frozenset(pii), src)
