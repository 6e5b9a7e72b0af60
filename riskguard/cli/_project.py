"""``riskguard init``, ``doctor`` and ``demo``: set up a project and check it."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from riskguard import db
from riskguard._resources import default_dir
from riskguard.cli._app import EXIT_FINDINGS, EXIT_OK, State, app
from riskguard.cli._audit import write_signing_key
from riskguard.config import Settings, load_settings
from riskguard.context import Principal, RequestInfo, request_context
from riskguard.errors import ConfigError, RiskGuardError
from riskguard.guard import Guard

__all__ = ["Check", "render_config", "run_checks"]

_CONFIG_NAME = "riskguard.toml"
_COPIED = ("policies", "audit")


def _toml_scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = value.as_posix()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return None


def render_config(settings: Settings | None = None) -> str:
    """A commented ``riskguard.toml`` holding every key with its (default) value."""
    s = settings or Settings()
    out = [
        "# riskguard configuration. Every key shows its default; relative paths are relative",
        "# to this file. Environment overrides: RISKGUARD_<SECTION>__<KEY>.",
    ]
    for name in Settings.model_fields:
        section = getattr(s, name)
        if not isinstance(section, BaseModel):
            continue
        doc = (type(section).__doc__ or "").strip().splitlines()[0]
        out += ["", f"# {doc}", f"[{name}]"]
        for key in type(section).model_fields:
            value = _toml_scalar(getattr(section, key))
            out.append(f"{key} = {value}" if value is not None else f"# {key} = (unset)")
    return "\n".join(out) + "\n"


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Project folder (default: here).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write riskguard.toml, policies/ and audit/ into a project and create the tables."""
    directory = directory.resolve()
    targets = [directory / _CONFIG_NAME, *(directory / n for n in _COPIED)]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        names = ", ".join(t.name for t in existing)
        raise ConfigError(
            f"refusing to overwrite {names}",
            path=directory,
            hint="nothing was changed; pass --force to overwrite",
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        dst = directory / name
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        shutil.copytree(default_dir(name), dst)
    cfg = directory / _CONFIG_NAME
    tmp = cfg.with_suffix(".toml.tmp")
    tmp.write_text(render_config(), encoding="utf-8")
    tmp.replace(cfg)
    settings = load_settings(cfg)
    key = settings.resolve(settings.audit.signing_key)
    wrote_key = not key.exists()
    if wrote_key:
        write_signing_key(key)
    with Guard(settings) as guard:
        guard.create_schema()
    extra = f", the audit signing key {key}" if wrote_key else ""
    typer.echo(f"wrote {cfg}, {', '.join(n + '/' for n in _COPIED)}{extra} and created the tables")


@dataclass(frozen=True)
class Check:
    """One line of ``riskguard doctor``."""

    name: str
    ok: bool
    detail: str


def _check(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except RiskGuardError as exc:
        return Check(name, False, str(exc))
    except OSError as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def run_checks(settings: Settings) -> list[Check]:
    """Every check ``doctor`` runs, in order; later checks are skipped when the DB is down."""
    guard = Guard(settings)
    checks = [Check("config", True, str(settings.source or "defaults (no riskguard.toml)"))]
    try:
        engine_check = _check("database driver", lambda: guard.engine.dialect.driver)
        checks.append(engine_check)
        if not engine_check.ok:
            return checks

        def reach() -> str:
            with db.map_errors(guard.engine, "connecting"), guard.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return guard.engine.url.render_as_string(hide_password=True)

        reach_check = _check("database reachable", reach)
        checks.append(reach_check)
        if not reach_check.ok:
            return checks

        def schema() -> str:
            missing = db.missing_tables(guard.engine)
            if missing:
                raise RiskGuardError(
                    f"missing tables {', '.join(missing)}: run `riskguard init` or "
                    "Guard.create_schema()"
                )
            return f"{len(db.load_tables().tables)} tables present"

        checks.append(_check("schema", schema))

        def signing() -> str:
            keys = guard.audit_keys()
            if keys is None:
                return "checkpoints disabled ([audit] checkpoints = false)"
            names = ", ".join(k.name for k in keys.signing) or "none (verify-only host)"
            return f"checkpoint signing keys: {names}"

        checks.append(_check("audit signing key", signing))
        for label, path in (
            ("access model", settings.access.model),
            ("access policy", settings.access.policy),
        ):
            resolved = settings.resolve(path)
            checks.append(_check(label, functools.partial(_exists, resolved)))
    finally:
        guard.close()
    return checks


def _exists(path: Path) -> str:
    if not path.is_file():
        raise RiskGuardError(f"{path} does not exist")
    return str(path)


def _print_checks(checks: list[Check], as_json: bool) -> int:
    ok = all(c.ok for c in checks)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "checks": [c.__dict__ for c in checks]}))
    else:
        table = Table(title="riskguard doctor")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(c.name, "[green]OK[/]" if c.ok else "[red]FAIL[/]", c.detail)
        Console().print(table)
    return EXIT_OK if ok else EXIT_FINDINGS


@app.command()
def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the config, the database (reachable, schema) and the policy files."""
    state: State = ctx.obj
    settings = load_settings(state.config)
    raise typer.Exit(_print_checks(run_checks(settings), as_json))


def _demo_crypto(console: Console, settings: Settings, target: Path) -> None:
    """Encrypt customers' personal data, find one by any phone spelling, mask it for a
    role, rotate and rewrap a key, then shred one customer."""
    import sqlalchemy as sa

    from riskguard.crypto import (
        BlindIndexSpec,
        EncryptedString,
        FieldCrypto,
        Keyring,
        MaskPolicy,
        MemoryKeyProvider,
        rewrap_column,
    )
    from riskguard.errors import ShreddedError

    with Guard(settings) as guard:
        # The demo's keys live in memory; a deployment uses [keys] provider = "file" or a KMS.
        crypto = FieldCrypto(Keyring(guard.engine, MemoryKeyProvider(), audit=guard.audit))
        md = sa.MetaData()
        t = sa.Table(
            "demo_customer",
            md,
            sa.Column("id", sa.String(20), primary_key=True),
            sa.Column("phone", EncryptedString(
                crypto, length=20, per_row=True, subject="id",
                blind_index=BlindIndexSpec("phone_bidx", "phone", bits=8))),
            sa.Column("phone_bidx", sa.String(2)),
            sa.Column("note", EncryptedString(crypto, per_row=True)),
        )  # fmt: skip
        md.drop_all(guard.engine)
        md.create_all(guard.engine)
        people = [("u-1001", "13800138000"), ("u-1002", "13912345678"), ("u-1003", "13700001111")]
        rows = [crypto.prepare(t, {"id": i, "phone": p, "note": "ring twice"}) for i, p in people]
        with guard.engine.begin() as conn:
            conn.execute(t.insert(), rows)
            stored = conn.execute(sa.select(sa.type_coerce(t.c.phone, sa.Text))).scalars().first()
        console.print(f"stored phone ciphertext: {(stored or '')[:28]}…")
        masks = MaskPolicy.from_toml(settings.resolve("policies/masking.toml"))
        for spelling in ("+86 138-0013-8000", "0086 13800138000"):
            with guard.engine.connect() as conn, crypto.pii_reads():
                found = [
                    crypto.reveal(t, r)
                    for r in conn.execute(
                        sa.select(t).where(t.c.phone.blind_eq(spelling))
                    ).mappings()
                ]
            exact = [r for r in found if r["phone"] == "13800138000"]
            shown = masks.apply("customer.phone", exact[0]["phone"], "cs_agent")
            console.print(
                f"blind-index search {spelling!r}: {exact[0]['id']}, cs_agent sees {shown}"
            )
        crypto.keyring.rotate("field:demo_customer.note")
        report = rewrap_column(guard.engine, t, "note", batch_size=2)
        console.print(
            f"key rotated, {report.rewrapped} rows rewrapped, left on old versions: "
            f"{sum(n for k, n in report.remaining.items() if k != report.primary)}"
        )
        erased = crypto.shred("u-1002", tables=[t], engine=guard.engine)
        with guard.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == "u-1002")).mappings().one()
        try:
            crypto.reveal(t, row)
        except ShreddedError:
            console.print(
                f"u-1002 shredded ({erased.key.versions_destroyed} key destroyed, "
                f"old backups protected: {erased.key.backups_protected}): reads erased"
            )
        md.drop_all(guard.engine)


def _demo_audit(console: Console, settings: Settings, target: Path) -> None:
    """Serve a few O2O requests into the audit log, then verify, export and prove it."""
    from riskguard.audit import verify_export
    from riskguard.types import Outcome, ResourceRef

    with Guard(settings) as guard:
        log = guard.audit
        staff = Principal("agent-7", type="staff", domain="platform", roles=("cs_agent",))
        customer = Principal("u-1001", type="user", domain="m-88", roles=("customer",))
        for who, action, outcome, res in (
            (customer, "auth.login", "success", None),
            (customer, "coupon.redeem", "success", ResourceRef("coupon", "c-9", "m-88")),
            (staff, "access.decision", "allow", ResourceRef("customer.phone", "u-1001")),
            (staff, "pii.read", "success", ResourceRef("customer", "u-1001")),
            (customer, "access.decision", "deny", ResourceRef("order", "o-2", "m-88")),
        ):
            with request_context(who, RequestInfo(client_ip="127.0.0.1")), log.batch():
                log.record(action, cast(Outcome, outcome), resource=res, details={"demo": True})
        signed = log.checkpoint()
        console.print(f"audit: {log.head().seq} events, checkpoint at size "
                      f"{signed.checkpoint.tree_size} signed by "
                      f"{', '.join(n for n, _, _ in signed.signatures())}")  # fmt: skip
        report = log.verify()
        console.print(f"audit verify (database): {'intact' if report.ok else report.detail}")
        export = target / "audit-export.jsonl"
        log.export(export)
        offline = verify_export(export, log.trusted_keys())
        console.print(f"audit verify --file {export.name}: "
                      f"{'intact' if offline.ok else offline.detail}")  # fmt: skip
        proof = log.prove(2)
        ok = proof.verify(signed.checkpoint.root)
        console.print(f"inclusion proof for seq 2: {len(proof.to_bytes())} bytes, "
                      f"{'valid' if ok else 'INVALID'} against the signed root")  # fmt: skip
        if not (report.ok and offline.ok and ok):
            raise typer.Exit(EXIT_FINDINGS)


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put the demo project (default: a temp folder)."),
    ] = None,
) -> None:
    """Run riskguard end to end on a throw-away SQLite project."""
    console = Console()
    target = directory.resolve() if directory else Path(tempfile.mkdtemp(prefix="riskguard-demo-"))
    console.rule("riskguard demo")
    console.print(f"project folder: {target}")
    if (target / _CONFIG_NAME).exists():
        console.print("reusing the existing riskguard.toml")
    else:
        init(target, force=False)
    settings = load_settings(target / _CONFIG_NAME)
    _demo_crypto(console, settings, target)
    _demo_audit(console, settings, target)
    code = _print_checks(run_checks(settings), as_json=False)
    if code != EXIT_OK:
        raise typer.Exit(code)
    console.print("[bold green]demo finished[/]")
