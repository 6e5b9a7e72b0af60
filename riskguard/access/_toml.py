"""Reading the TOML files security teams edit (policy tests, the resource schema)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from riskguard.errors import PolicyError

__all__ = ["read_toml"]

_TOML_LINE = re.compile(r"at line (\d+)")


def read_toml(path: Path, what: str) -> tuple[str, dict[str, Any]]:
    """The file's text and its parsed TOML.

    :raises PolicyError: the file cannot be read, is not UTF-8 or not TOML (file and, where
        the parser gives it, line).
    """
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the {what}: {exc}", path=src) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_LINE.search(str(exc))
        raise PolicyError(
            f"not valid TOML: {exc}", path=src, line=int(m.group(1)) if m else None
        ) from None
