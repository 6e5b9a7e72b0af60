"""Where the default files people edit (``policies/``, ``audit/``) are found.

An installed wheel carries them in ``riskguard/_defaults/`` (hatch ``force-include``); a
source checkout (editable install, or tests run from the tree) has them at the top of the
checkout. Both are the same files: the checkout's are the originals.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_dir"]

_PACKAGE = Path(__file__).resolve().parent


def default_dir(name: str) -> Path:
    """The folder of shipped defaults called ``name`` (``policies`` or ``audit``).

    :raises FileNotFoundError: neither the wheel nor the checkout has it.
    """
    for candidate in (_PACKAGE / "_defaults" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"riskguard's default {name}/ folder is missing from this install")
