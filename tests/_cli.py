"""Running the ``riskguard`` command inside a test."""

from __future__ import annotations

import pytest

from riskguard.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``riskguard ARGS``; return its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ei.value.code or 0), out, err
