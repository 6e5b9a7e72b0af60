"""The ``riskguard`` command line: init, doctor, demo, and one group per part.

Exit codes: 0 ok, 1 findings or failures (damage found, a check failed), 2 usage or
configuration errors. Errors print a diagnostic, not a traceback, unless ``--debug``.
"""

from __future__ import annotations

from riskguard.cli._app import app, main

__all__ = ["app", "main"]
