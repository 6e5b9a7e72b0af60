"""Policy lines and where they come from: the Casbin CSV format, read with line numbers.

Casbin's file adapter splits a line at the commas outside brackets, strips each token and
skips empty lines and lines starting with ``#``. :func:`parse_policy_text` does exactly that
(the tests compare it with Casbin's tokenizer) and keeps each line's number, so that a
decision, an error or a lint finding can point at ``policy.csv:42``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from riskguard.errors import PolicyError

__all__ = [
    "FilePolicy",
    "MemoryPolicy",
    "PolicyLine",
    "PolicySource",
    "parse_policy_text",
    "split_tokens",
]

_INTERESTING = re.compile(r"[,\[\]\(\)]")
_MEMORY = "<memory>"


@dataclass(frozen=True, slots=True)
class PolicyLine:
    """One ``p`` rule or ``g`` grant: its type, its values, and where it was written.

    ``line`` is 1-based (0 when the source has no lines); ``source`` is the file path or
    the name of the store it came from.
    """

    ptype: str
    values: tuple[str, ...]
    source: str = _MEMORY
    line: int = 0

    @property
    def location(self) -> str:
        """``policy.csv:42`` (the file's name, not its full path), or the source name."""
        name = Path(self.source).name if self.source != _MEMORY else self.source
        return f"{name}:{self.line}" if self.line else name

    def __str__(self) -> str:
        return ", ".join((self.ptype, *self.values))


@runtime_checkable
class PolicySource(Protocol):
    """Where policy lines are stored (one verb). The file adapter is :class:`FilePolicy`;
    :class:`MemoryPolicy` is the in-memory double."""

    def load(self) -> Sequence[PolicyLine]:
        """Every policy line, in storage order.

        :raises PolicyError: the storage cannot be read or a line does not parse.
        """
        ...


def split_tokens(line: str) -> list[str]:
    """Split one stripped, non-comment line as Casbin does: at commas outside ``[]``/``()``.

    :raises ValueError: a closing bracket without its opening one (Casbin crashes on it).
    """
    if "(" not in line and "[" not in line and ")" not in line and "]" not in line:
        return [t.strip() for t in line.split(",")]
    depth = 0
    tokens: list[str] = []
    start = 0
    for m in _INTERESTING.finditer(line):
        c = m.group()
        if c in "[(":
            depth += 1
        elif c in "])":
            if depth == 0:
                raise ValueError(f"unbalanced {c!r} at column {m.start() + 1}")
            depth -= 1
        elif depth == 0:
            tokens.append(line[start : m.start()].strip())
            start = m.end()
    tokens.append(line[start:].strip())
    return tokens


def _line(text: str, source: str, number: int) -> PolicyLine | None:
    text = text.strip()
    if text == "" or text.startswith("#"):
        return None
    try:
        tokens = split_tokens(text)
    except ValueError as exc:
        raise PolicyError(f"cannot split the line: {exc}", path=source, line=number) from None
    if tokens[0] == "":
        raise PolicyError(
            "the line does not start with a policy type (p, g, ...)", path=source, line=number
        )
    return PolicyLine(tokens[0], tuple(tokens[1:]), source, number)


def parse_policy_text(text: str, source: str = _MEMORY) -> list[PolicyLine]:
    """Every rule and grant line of a Casbin policy CSV text, with 1-based line numbers.

    :raises PolicyError: a line cannot be split (file and line named).
    """
    out: list[PolicyLine] = []
    for number, raw in enumerate(text.split("\n"), 1):
        pl = _line(raw, source, number)
        if pl is not None:
            out.append(pl)
    return out


class FilePolicy:
    """The policy CSV file Casbin's file adapter reads (UTF-8, one line per rule)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[PolicyLine]:
        """:raises PolicyError: the file is missing or unreadable, or a line is malformed."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise PolicyError(
                f"cannot read the policy file: {exc.strerror or exc}", path=self.path
            ) from None
        out: list[PolicyLine] = []
        source = str(self.path)
        # Casbin reads bytes line by line and decodes each: split the same way.
        for number, raw in enumerate(data.split(b"\n"), 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PolicyError("the line is not valid UTF-8", path=source, line=number) from None
            pl = _line(text, source, number)
            if pl is not None:
                out.append(pl)
        return out

    def __repr__(self) -> str:
        return f"FilePolicy({str(self.path)!r})"


class MemoryPolicy:
    """Policy lines held in memory: from CSV text or from rows such as
    ``("p", "customer", "*", "order", "read", "owner", "allow")``."""

    def __init__(self, lines: str | Iterable[Sequence[str]], *, name: str = _MEMORY) -> None:
        if isinstance(lines, str):
            self._lines = parse_policy_text(lines, name)
        else:
            self._lines = [
                PolicyLine(row[0], tuple(row[1:]), name, n) for n, row in enumerate(lines, 1)
            ]

    def load(self) -> list[PolicyLine]:
        """The lines given at construction."""
        return list(self._lines)
