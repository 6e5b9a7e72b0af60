"""The Casbin model file (``model.conf``), read as Casbin reads it, with line numbers.

The reader follows Casbin's own config parser (sections in brackets, ``key = value``,
``#``/``;`` comment lines, ``\\`` continuing a value on the next line) and then checks what
Casbin would only find at the first request, or never: unknown sections and keys, a missing
section, an unsupported effect, a matcher that is not an expression or names a token or
function that does not exist. Each problem is a :class:`PolicyError` with file and line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from casbin import util as casbin_util  # type: ignore[import-untyped]

from riskguard.errors import PolicyError

__all__ = ["EFFECTS", "ModelDef", "RoleDef", "matcher_expression", "parse_model", "read_model"]

_SECTIONS = {
    "request_definition": "r",
    "policy_definition": "p",
    "role_definition": "g",
    "policy_effect": "e",
    "matchers": "m",
}
_REQUIRED = ("r", "p", "e", "m")
#: The effects Casbin supports, in the form Casbin compares them (after escaping).
EFFECTS = {
    "some(where (p_eft == allow))": "allow_override",
    "!some(where (p_eft == deny))": "deny_override",
    "some(where (p_eft == allow)) && !some(where (p_eft == deny))": "allow_and_deny",
    "priority(p_eft) || deny": "priority",
    "subjectPriority(p_eft) || deny": "subject_priority",
}
_FUNCTIONS = frozenset(
    {
        "keyMatch",
        "keyMatch2",
        "keyMatch3",
        "keyMatch4",
        "keyMatch5",
        "regexMatch",
        "ipMatch",
        "globMatch",
        "timeMatch",
        "eval",
    }
)
_KEY = re.compile(r"^([a-z])(\d*)$")
_PARAMS = re.compile(r"\((.*?)\)")


@dataclass(frozen=True, slots=True)
class RoleDef:
    """A role definition such as ``g = _, _, _``: ``arity`` 2 (no domains) or more."""

    arity: int
    conditional: bool = False


@dataclass(frozen=True)
class ModelDef:
    """A parsed model. ``request`` and ``policy`` map ``r``/``p`` (and ``r2``…) to their
    token names; ``effect`` and ``matcher`` hold the values as Casbin evaluates them;
    ``lines`` maps ``(section letter, key)`` to the line the value starts on."""

    path: str
    text: str
    request: dict[str, tuple[str, ...]]
    policy: dict[str, tuple[str, ...]]
    roles: dict[str, RoleDef]
    effect: dict[str, str]
    matcher: dict[str, str]
    lines: dict[tuple[str, str], int] = field(default_factory=dict)

    def line_of(self, sec: str, key: str) -> int | None:
        """The line on which ``key`` of section ``sec`` (``"m"``, ``"m"``) starts."""
        return self.lines.get((sec, key))

    def error(self, message: str, sec: str, key: str, hint: str | None = None) -> PolicyError:
        """A :class:`PolicyError` pointing at ``key`` of section ``sec``."""
        return PolicyError(message, path=self.path, line=self.line_of(sec, key), hint=hint)


def matcher_expression(matcher: str) -> str:
    """The matcher as Python source, transformed exactly as Casbin's evaluator does."""
    expr = matcher.replace("&&", "and").replace("||", "or")
    return re.sub(r"!(?!=)", "not ", expr)


def read_model(path: str | Path) -> ModelDef:
    """Read and check a model file.

    :raises PolicyError: the file cannot be read or is invalid (file and line named).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the model file: {exc}", path=p) from None
    return parse_model(text, str(p))


def _options(text: str, path: str) -> dict[str, dict[str, tuple[str, int]]]:
    """Casbin's config parser, keeping the first line of every value."""
    data: dict[str, dict[str, tuple[str, int]]] = {}
    section = ""
    buf: list[str] = []
    start = 0

    def flush() -> None:
        value = "".join(buf)
        buf.clear()
        if not value:
            return
        key, eq, rest = value.partition("=")
        if not eq:
            raise PolicyError(
                f"expected `key = value`, found {key.strip()!r}", path=path, line=start
            )
        opts = data.setdefault(section, {})
        name = key.strip()
        if name in opts:
            raise PolicyError(f"{name!r} is defined twice in [{section}]", path=path, line=start)
        opts[name] = (rest.strip(), start)

    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line == "" or line[:1] in ("#", ";"):
            flush()
        elif line[:1] == "[" and line[-1] == "]":
            flush()
            section = line[1:-1]
            if section not in _SECTIONS:
                raise PolicyError(
                    f"unknown section [{section}]",
                    path=path,
                    line=number,
                    hint="sections: " + ", ".join(f"[{s}]" for s in _SECTIONS),
                )
        else:
            if not buf:
                start = number
            if section == "":
                raise PolicyError("a value outside any [section]", path=path, line=number)
            if line[-1] == "\\":
                buf.append(line[:-1].strip() + " ")
            else:
                buf.append(line)
                flush()
    flush()
    return data


def parse_model(text: str, path: str = "<model>") -> ModelDef:
    """Parse model text (see :func:`read_model`).

    :raises PolicyError: the model is invalid (file and line named).
    """
    data = _options(text, path)
    lines: dict[tuple[str, str], int] = {}
    values: dict[str, dict[str, str]] = {s: {} for s in _SECTIONS.values()}
    for section, opts in data.items():
        sec = _SECTIONS[section]
        for key, (value, line) in opts.items():
            m = _KEY.match(key)
            if m is None or m.group(1) != sec or m.group(2) in ("0", "1"):
                raise PolicyError(
                    f"unknown key {key!r} in [{section}]",
                    path=path,
                    line=line,
                    hint=f"keys in [{section}] are {sec}, {sec}2, {sec}3, ...",
                )
            lines[(sec, key)] = line
            values[sec][key] = value
    for sec in _REQUIRED:
        if sec not in values[sec]:
            name = next(k for k, v in _SECTIONS.items() if v == sec)
            raise PolicyError(f"the model has no `{sec} = ...` in [{name}]", path=path)

    def tokens(sec: str, key: str, value: str) -> tuple[str, ...]:
        toks = tuple(t.strip() for t in value.split(","))
        for t in toks:
            if not t.isidentifier():
                raise PolicyError(
                    f"{t!r} is not a valid token name", path=path, line=lines[(sec, key)]
                )
        if len(set(toks)) != len(toks):
            raise PolicyError("a token is named twice", path=path, line=lines[(sec, key)])
        return toks

    request = {k: tokens("r", k, v) for k, v in values["r"].items()}
    policy = {k: tokens("p", k, v) for k, v in values["p"].items()}
    roles: dict[str, RoleDef] = {}
    for key, value in values["g"].items():
        params = _PARAMS.search(value)
        underscores = value.count("_")
        plain = [t.strip() for t in _PARAMS.sub("", value).split(",") if t.strip()]
        if underscores < 2 or any(t != "_" for t in plain):
            raise PolicyError(
                "a role definition is `_, _` or `_, _, _` (user, role[, domain])",
                path=path,
                line=lines[("g", key)],
            )
        roles[key] = RoleDef(len(plain), conditional=params is not None)
    effect: dict[str, str] = {}
    for key, value in values["e"].items():
        escaped = casbin_util.remove_comments(casbin_util.escape_assertion(value))
        if escaped not in EFFECTS:
            raise PolicyError(
                f"unsupported policy effect {value!r}",
                path=path,
                line=lines[("e", key)],
                hint="use some(where (p.eft == allow)) && !some(where (p.eft == deny))",
            )
        effect[key] = escaped
    matcher = {
        k: casbin_util.remove_comments(casbin_util.escape_assertion(v))
        for k, v in values["m"].items()
    }
    model = ModelDef(path, text, request, policy, roles, effect, matcher, lines)
    for key in matcher:
        _check_matcher(model, key)
    return model


def _check_matcher(model: ModelDef, key: str) -> None:
    try:
        tree = ast.parse(matcher_expression(model.matcher[key]).strip(), mode="eval")
    except SyntaxError as exc:
        raise model.error(f"the matcher is not a valid expression: {exc.msg}", "m", key) from None
    known = {f"{k}_{t}" for k, toks in model.request.items() for t in toks}
    known |= {f"{k}_{t}" for k, toks in model.policy.items() for t in toks}
    functions = _FUNCTIONS | model.roles.keys()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in functions:
                raise model.error(
                    f"unknown function in the matcher: {ast.unparse(node.func)}", "m", key
                )
        elif isinstance(node, ast.Name) and node.id not in known and node.id not in functions:
            name = re.sub(r"^([rp]\d*)_", r"\1.", node.id)
            raise model.error(f"the matcher names {name!r}, which is not defined", "m", key)
