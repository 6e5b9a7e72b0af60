"""``riskguard keys …``: the keyring — rotate, rewrap, retire, shred, back up, restore.

Commands that need the application's encrypted columns (``rewrap``, ``status``, ``retire``,
``shred``) import the modules named by ``--models`` or ``[keys] models`` and use every
table of theirs with an encrypted column type. Passphrases are read from environment
variables, never from the command line (where ``ps`` and shell history would keep them).

Exit codes: 0 ok, 1 findings (rows left under old versions, rows that failed), 2 usage or
configuration error.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskguard.cli._app import EXIT_FINDINGS, EXIT_OK, JsonOpt, State, app, open_guard
from riskguard.config import Settings, load_settings
from riskguard.errors import ConfigError, KeyManagementError
from riskguard.guard import Guard

__all__ = ["keys_app", "load_model_tables"]

keys_app = typer.Typer(
    help="Data keys: rotate, rewrap, retire, shred, export and import.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--models", "-m", help="Module with the application's tables (repeatable; default: "
        "[keys] models)."
    ),
]  # fmt: skip
PassEnvOpt = Annotated[
    str,
    typer.Option("--passphrase-env", help="Environment variable holding the passphrase."),
]


def load_model_tables(modules: list[str]) -> list[sa.Table]:
    """The tables with an encrypted column in the named modules' metadata.

    :raises ConfigError: a module does not import.
    """
    from riskguard.crypto._sqla import _Encrypted

    seen: dict[int, sa.Table] = {}
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"cannot import the models module {name!r}: {type(exc).__name__}: {exc}",
                key="keys.models",
            ) from None
        for value in vars(mod).values():
            md = value if isinstance(value, sa.MetaData) else getattr(value, "metadata", None)
            if isinstance(md, sa.MetaData):
                for t in md.tables.values():
                    if any(isinstance(c.type, _Encrypted) for c in t.columns):
                        seen[id(t)] = t
    return sorted(seen.values(), key=lambda t: t.name)


def _tables(settings: Settings, models: list[str] | None) -> list[sa.Table]:
    names = models if models else settings.keys.models
    if not names:
        raise ConfigError(
            "no models module named",
            key="keys.models",
            hint='pass --models myapp.models or set [keys] models = ["myapp.models"]',
        )
    return load_model_tables(names)


def _passphrase(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise ConfigError(
            f"the environment variable {var} holding the passphrase is not set",
            hint=f"export {var}=… (at least 12 characters; never put it on the command line)",
        )
    return value


@keys_app.command("init")
def init_cmd(ctx: typer.Context) -> None:
    """Create the encrypted keyring file ``[keys] keyring_path`` (its passphrase from the
    variable ``[keys] passphrase_env``). Refuses to overwrite an existing keyring."""
    from riskguard.crypto import FileKeyProvider

    state: State = ctx.obj
    settings = load_settings(state.config)
    path = settings.resolve(settings.keys.keyring_path)
    passphrase = _passphrase(settings.keys.passphrase_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    FileKeyProvider.create(path, passphrase)
    typer.echo(f"keyring created: {path} (keep its passphrase apart from database backups)")


@keys_app.command("list")
def list_cmd(
    ctx: typer.Context,
    subjects: Annotated[bool, typer.Option("--subjects", help="Include per-subject keys.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Keysets, their versions and states (never key material)."""
    with open_guard(ctx) as guard:
        sets = [k for k in guard.crypto.keyring.keysets() if subjects or k.kind != "subject"]
    if as_json:
        typer.echo(json.dumps([_keyset_json(k) for k in sets], indent=2))
        return
    table = Table(title="keysets")
    for col in ("id", "name", "kind", "state", "primary", "min decrypt", "versions"):
        table.add_column(col)
    for k in sets:
        versions = ", ".join(f"v{v.version}:{v.state}" for v in k.versions)
        table.add_row(str(k.id), k.name, k.kind, k.state, str(k.primary_version or "-"),
                      str(k.min_decryption_version), versions)  # fmt: skip
    Console().print(table)


def _keyset_json(k: Any) -> dict[str, Any]:
    return {
        "id": k.id, "name": k.name, "kind": k.kind, "state": k.state,
        "primary_version": k.primary_version,
        "min_decryption_version": k.min_decryption_version,
        "versions": [
            {"version": v.version, "state": v.state, "kek_id": v.kek_id} for v in k.versions
        ],
    }  # fmt: skip


@keys_app.command()
def rotate(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Keysets to rotate (field:table.column).")],
    as_json: JsonOpt = False,
) -> None:
    """Promote a new version of each keyset (new writes use it; old versions still read)."""
    out = {}
    with open_guard(ctx) as guard:
        for name in names:
            out[name] = guard.crypto.keyring.rotate(name)
    if as_json:
        typer.echo(json.dumps(out))
    else:
        for name, v in out.items():
            typer.echo(f"{name}: version {v} is primary; run `riskguard keys rewrap` next")


def _status_rows(guard: Guard, tables: list[sa.Table]) -> list[dict[str, Any]]:
    from riskguard.crypto import encrypted_columns, versions_in_use

    names = {k.id: k.name for k in guard.crypto.keyring.keysets()}
    rows = []
    for t, col in encrypted_columns(tables):
        for (ks, v), n in sorted(versions_in_use(guard.engine, t, col).items()):
            rows.append({"table": t.name, "column": col, "keyset": names.get(ks, f"#{ks}"),
                         "keyset_id": ks, "version": v, "rows": n})  # fmt: skip
    return rows


@keys_app.command()
def status(ctx: typer.Context, models: ModelsOpt = None, as_json: JsonOpt = False) -> None:
    """Rows under each key version, per encrypted column."""
    with open_guard(ctx) as guard:
        rows = _status_rows(guard, _tables(guard.settings, models))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="rows per key version")
    for c in ("table", "column", "keyset", "version", "rows"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["table"], r["column"], r["keyset"], str(r["version"]), str(r["rows"]))
    Console().print(table)


@keys_app.command()
def rewrap(
    ctx: typer.Context,
    models: ModelsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt rows under each keyset's primary version, in batches (resumable: run it
    again after a crash). Reports the rows still under each old version."""
    from riskguard.crypto import encrypted_columns, rewrap_column, versions_in_use

    reports = []
    with open_guard(ctx) as guard:
        pairs = [
            (t, c) for t, c in encrypted_columns(_tables(guard.settings, models))
            if t.c[c].type.subject is None  # type: ignore[attr-defined]
        ]  # fmt: skip
        todo = {}
        for t, c in pairs:
            t.c[c].type.field()  # type: ignore[attr-defined]
            todo[(t.name, c)] = sum(versions_in_use(guard.engine, t, c).values())
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), disable=as_json, transient=True,
        ) as bar:  # fmt: skip
            for t, c in pairs:
                task = bar.add_task(f"{t.name}.{c}", total=todo[(t.name, c)])
                reports.append(
                    rewrap_column(guard.engine, t, c, batch_size=batch_size,
                                  progress=lambda n, task=task: bar.advance(task, n))  # type: ignore[misc]
                )  # fmt: skip
    out: list[dict[str, Any]] = [
        {"table": r.table, "column": r.column, "keyset": r.keyset,
         "primary_version": r.primary[1], "rewrapped": r.rewrapped, "failed": r.failed,
         "failed_rows": r.failed_rows,
         "remaining": {f"{ks}/{v}": n for (ks, v), n in sorted(r.remaining.items())
                       if (ks, v) != r.primary}}
        for r in reports
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        for r in out:
            left = ", ".join(f"{k}: {n}" for k, n in r["remaining"].items()) or "none"
            typer.echo(f"{r['table']}.{r['column']}: {r['rewrapped']} rewrapped to version "
                       f"{r['primary_version']}, {r['failed']} failed; left under old versions: "
                       f"{left}")  # fmt: skip
    if any(r["failed"] or r["remaining"] for r in out):
        raise typer.Exit(EXIT_FINDINGS)


@keys_app.command("rebuild-index")
def rebuild_index(
    ctx: typer.Context,
    models: ModelsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every blind index under the current index root (after `riskguard keys
    rotate index:blind`); searches keep working meanwhile. Retire the old root after."""
    from riskguard.crypto import rebuild_blind_index

    out: list[dict[str, Any]] = []
    with open_guard(ctx) as guard:
        for t in _tables(guard.settings, models):
            for c in t.columns:
                if getattr(c.type, "blind_index", None) is not None:
                    r: Any = rebuild_blind_index(guard.engine, t, c.name, batch_size=batch_size)
                    out.append({"table": r.table, "column": r.column,
                                "index_version": r.index_version, "scanned": r.scanned,
                                "updated": r.updated, "shredded": r.skipped_shredded,
                                "failed": r.failed, "failed_rows": r.failed_rows})  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        for r in out:
            typer.echo(f"{r['table']}.{r['column']}: {r['updated']} of {r['scanned']} rows "
                       f"re-indexed under root version {r['index_version']}, {r['failed']} "
                       f"failed")  # fmt: skip
    if any(r["failed"] for r in out):
        raise typer.Exit(EXIT_FINDINGS)


@keys_app.command()
def retire(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Keyset (field:table.column).")],
    version: Annotated[int, typer.Argument(help="Version to retire.", min=1)],
    models: ModelsOpt = None,
) -> None:
    """Disable an old version; refused while any row of the models is still under it."""
    with open_guard(ctx) as guard:
        kr = guard.crypto.keyring
        ks = kr.describe(name)
        if ks.kind == "index":
            _check_rebuilt(guard, _tables(guard.settings, models), version)
        remaining = sum(
            r["rows"] for r in _status_rows(guard, _tables(guard.settings, models))
            if r["keyset_id"] == ks.id and r["version"] == version
        )  # fmt: skip
        kr.retire(name, version, remaining=remaining)
    typer.echo(f"{name}: version {version} retired")


def _check_rebuilt(guard: Guard, tables: list[sa.Table], version: int) -> None:
    """An index root may retire only when every blind-indexed column was rebuilt under a
    newer root (index values carry no version, so rows cannot be counted)."""
    from riskguard.crypto import index_rebuilt_version

    stale = [
        f"{t.name}.{c.name}" for t in tables for c in t.columns
        if getattr(c.type, "blind_index", None) is not None
        and (index_rebuilt_version(guard.engine, t, c.name) or 0) <= version
    ]  # fmt: skip
    if stale:
        raise KeyManagementError(
            f"blind indexes not rebuilt under a newer root: {', '.join(stale)}",
            key_id="index:blind",
            hint="run `riskguard keys rebuild-index` first",
        )


@keys_app.command()
def shred(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="The data subject's id.")],
    models: ModelsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Crypto-shred a data subject: null their blind indexes, destroy their key, rotate the
    subject KEK so old database backups cannot unwrap it."""
    with open_guard(ctx) as guard:
        result = guard.crypto.shred(
            subject, tables=_tables(guard.settings, models), engine=guard.engine
        )
    out = {
        "subject": subject, "versions_destroyed": result.key.versions_destroyed,
        "backups_protected": result.key.backups_protected,
        "subject_keys_rewrapped": result.key.rewrapped, "indexes_cleared": result.indexes_cleared,
    }  # fmt: skip
    typer.echo(json.dumps(out, indent=2) if as_json else
               f"subject shredded: {out['versions_destroyed']} key versions destroyed, "
               f"blind indexes cleared {result.indexes_cleared}, old backups protected: "
               f"{out['backups_protected']}")  # fmt: skip
    if not result.key.backups_protected:
        raise typer.Exit(EXIT_FINDINGS)


@keys_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="File to write (mode 0600; refused if it exists).")],
    passphrase_env: PassEnvOpt = "RISKGUARD_EXPORT_PASSPHRASE",
) -> None:
    """Back up every key, encrypted under a passphrase."""
    from riskguard.crypto import export_keys

    passphrase = _passphrase(passphrase_env)
    if out.exists():
        raise ConfigError("the export file exists; choose a new name", path=out)
    with open_guard(ctx) as guard:
        data = export_keys(guard.crypto.keyring, passphrase)
    try:
        # O_EXCL: never follow a planted link or overwrite a file that appeared meanwhile.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError("the export file exists; choose a new name", path=out) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        out.unlink(missing_ok=True)  # no half-written backup left behind
        raise
    typer.echo(f"keys exported to {out}")


@keys_app.command("import")
def import_cmd(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="An export written by `riskguard keys export`.")],
    passphrase_env: PassEnvOpt = "RISKGUARD_EXPORT_PASSPHRASE",
    as_json: JsonOpt = False,
) -> None:
    """Restore keys from an export (all or nothing; destroyed keys stay destroyed)."""
    from riskguard.crypto import import_keys

    passphrase = _passphrase(passphrase_env)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the export: {exc.strerror}", path=src) from None
    with open_guard(ctx) as guard:
        guard.create_schema()
        counts = import_keys(guard.crypto.keyring, data, passphrase)
    typer.echo(json.dumps(counts) if as_json else
               ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))  # fmt: skip
    raise typer.Exit(EXIT_OK)
