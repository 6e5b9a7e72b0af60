"""The root Typer app and the one place where errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from riskguard._version import __version__
from riskguard.errors import ConfigError, RiskGuardError

if TYPE_CHECKING:
    from riskguard.guard import Guard

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_USAGE",
    "JsonOpt",
    "State",
    "app",
    "main",
    "open_guard",
]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

#: The ``--json`` option every command that reports takes.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

app = typer.Typer(
    name="riskguard",
    help="Compliance, privacy and risk control for O2O backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class State:
    """Options of the root command, shared with every sub-command through ``ctx.obj``."""

    def __init__(self, config: Path | None, debug: bool) -> None:
        self.config = config
        self.debug = debug


@contextmanager
def open_guard(ctx: typer.Context) -> Iterator[Guard]:
    """The :class:`Guard` for the command's ``--config``, closed when the command ends.

    :raises ConfigError: the configuration is invalid.
    """
    from riskguard.config import load_settings
    from riskguard.guard import Guard

    state: State = ctx.obj
    with Guard(load_settings(state.config)) as guard:
        yield guard


def _version(value: bool) -> None:
    if value:
        typer.echo(f"riskguard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="riskguard.toml to use (default: $RISKGUARD_CONFIG or ./riskguard.toml).",
            envvar="RISKGUARD_CONFIG",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Compliance, privacy and risk control for O2O backends."""
    ctx.obj = State(config, debug)
    if debug:
        from loguru import logger

        logger.enable("riskguard")


def _register() -> None:
    # Sub-command modules attach themselves to `app` on import.
    from riskguard.cli import _audit, _keys, _policy, _project  # noqa: F401


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; never returns (exits with the code)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("RISKGUARD_DEBUG") == "1"
    try:
        # Standalone mode turns usage errors into exit 2 and always ends in SystemExit;
        # riskguard's own errors pass through it and are rendered here.
        typer.main.get_command(app).main(args=args, prog_name="riskguard", standalone_mode=True)
    except RiskGuardError as exc:
        if debug:
            traceback.print_exc()
        Console(stderr=True, highlight=False).print(exc.diagnostics(), markup=False)
        sys.exit(EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FINDINGS)
