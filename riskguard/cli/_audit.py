"""``riskguard audit …``: what auditors run — verify, export, prove, search, archive.

Exit codes: 0 intact / ok, 1 damage found or a proof failed, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskguard.audit import (
    AuditEvent,
    CheckpointError,
    ConsistencyProof,
    InclusionProof,
    KeyHistory,
    SearchFilter,
    TrustedKey,
    VerifyReport,
    format_ts,
    generate_signing_key,
    parse_checkpoint,
    read_witness,
    verify_export,
)
from riskguard.cli._app import EXIT_FINDINGS, EXIT_OK, JsonOpt, app, open_guard
from riskguard.config import load_settings
from riskguard.errors import ConfigError

__all__ = ["audit_app", "write_signing_key"]

audit_app = typer.Typer(
    help="Verify, export, prove and search the audit log.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")

PublicKeyOpt = Annotated[
    list[Path] | None,
    typer.Option("--public-key", "-k", help="Trusted Ed25519 public key PEM (repeatable)."),
]
KeysOpt = Annotated[
    Path | None, typer.Option("--keys", help="Key history TOML with validity windows.")
]


def _load_trusted(public_keys: list[Path], keys_file: Path | None) -> list[TrustedKey] | None:
    trusted: list[TrustedKey] = []
    for p in public_keys:
        try:
            trusted.append(TrustedKey.from_pem(p.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"cannot read the public key: {exc.strerror}", path=p) from None
        except ValueError as exc:
            raise ConfigError(f"not an Ed25519 PEM key: {exc}", path=p) from None
    if keys_file is not None:
        trusted += KeyHistory.load(keys_file).trusted
    return trusted or None


def _key_name(path: Path) -> str:
    # `riskguard audit keygen --out keys/NAME.pem` writes NAME.pem and NAME.pub.pem; the key
    # name is NAME either way.
    name = path.name
    for suffix in (".pub.pem", ".pem", ".pub"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _external(checkpoints: list[Path], witness: Path | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for p in checkpoints:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the checkpoint: {exc}", path=p) from None
        out.append((p.name, text))
    if witness is not None:
        if not witness.is_file():
            raise ConfigError("the witness file does not exist", path=witness)
        out += read_witness(witness)
    return out


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], None] | None]:
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("verify", total=total)
        yield lambda n: bar.update(task, completed=n)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    console = Console(highlight=False)
    if report.ok:
        console.print(f"[green]intact[/]: {report.detail}")
    else:
        console.print(
            f"[red]DAMAGED[/]: {report.kind} at seq {report.first_bad_seq}: {report.detail}",
            markup=True,
        )


@audit_app.command()
def verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Verify an export file (no database needed)."),
    ] = None,
    public_key: PublicKeyOpt = None,
    keys: KeysOpt = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="A signed checkpoint note you hold (repeatable)."),
    ] = None,
    witness: Annotated[
        Path | None, typer.Option("--witness", help="A witness file of checkpoints.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute every hash, the chain, the Merkle roots and every checkpoint signature.

    Without --file, verifies the database named by the config. Exit 0 intact, 1 damaged.
    """
    trusted = _load_trusted(public_key or [], keys)
    external = _external(checkpoint or [], witness)
    if file is not None:
        if trusted is None:
            raise ConfigError(
                "offline verification needs the log's public key",
                hint="pass --public-key PUB.pem (or --keys history.toml)",
            )
        if not file.is_file():
            raise ConfigError("the export file does not exist", path=file)
        with _progress(None) as progress:
            report = verify_export(file, trusted, external=external, progress=progress)
    else:
        with open_guard(ctx) as guard:
            log = guard.audit
            head = log.head()
            with _progress(head.seq - head.pruned_through) as progress:
                report = log.verify(trusted=trusted, external=external, progress=progress)
    _print_report(report, as_json)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FINDINGS)


@audit_app.command()
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="The JSON Lines file to write.")],
    until: Annotated[int | None, typer.Option(help="Export events up to this seq.")] = None,
) -> None:
    """Write events and checkpoints to a file that `audit verify --file` checks offline."""
    with open_guard(ctx) as guard:
        n = guard.audit.export(out, until=until)
    typer.echo(f"wrote {n} events to {out}")


@audit_app.command("checkpoint")
def checkpoint_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the log as it is now and print it."""
    with open_guard(ctx) as guard:
        signed = guard.audit.checkpoint()
    if as_json:
        cp = signed.checkpoint
        typer.echo(json.dumps({"tree_size": cp.tree_size, "note": signed.note}))
    else:
        typer.echo(signed.note, nl=False)


@audit_app.command()
def prove(
    ctx: typer.Context,
    seq: Annotated[int | None, typer.Argument(help="The event to prove.")] = None,
    size: Annotated[
        int | None, typer.Option(help="Tree size (default: the latest checkpoint).")
    ] = None,
    consistency: Annotated[
        tuple[int, int] | None,
        typer.Option("--consistency", help="Prove tree size A is a prefix of size B."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the proof here.")] = None,
) -> None:
    """An inclusion proof for SEQ (or a consistency proof), with the signed checkpoint it
    verifies against. Check it offline with `riskguard audit check-proof`."""
    with open_guard(ctx) as guard:
        log = guard.audit
        cps = {c.checkpoint.tree_size: c for c in log.checkpoints()}
        doc: dict[str, Any]
        if consistency is not None:
            a, b = consistency
            if a not in cps or b not in cps:
                raise ConfigError(
                    "consistency proofs are between two checkpointed sizes",
                    hint=f"checkpointed sizes: {', '.join(map(str, sorted(cps))) or 'none'}",
                )
            cproof = log.prove_consistency(a, b)
            doc = {"consistency": cproof.to_json(), "first": cps[a].note, "second": cps[b].note}
        else:
            if seq is None:
                raise typer.BadParameter("give SEQ or --consistency A B")
            proof = log.prove(seq, size)
            if proof.tree_size not in cps:
                raise ConfigError(f"no checkpoint at tree size {proof.tree_size}")
            doc = {
                "inclusion": proof.to_json(),
                "checkpoint": cps[proof.tree_size].note,
                "bytes": len(proof.to_bytes()),
            }
    text = json.dumps(doc, indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@audit_app.command("check-proof")
def check_proof(
    proof_file: Annotated[Path, typer.Argument(help="A proof written by `audit prove`.")],
    public_key: PublicKeyOpt = None,
    keys: KeysOpt = None,
    event_hash: Annotated[
        str | None, typer.Option(help="The event hash you hold (hex), to prove it is logged.")
    ] = None,
    log_id: Annotated[
        str | None,
        typer.Option("--log-id", help="The log the proof must be about (checkpoint origin)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a proof offline against its *signed* checkpoint (never an unsigned root).

    A key may sign checkpoints of several logs: pass --log-id to insist on one."""
    trusted = _load_trusted(public_key or [], keys)
    if trusted is None:
        raise ConfigError("checking a proof needs the log's public key", hint="pass --public-key")
    try:
        doc = json.loads(proof_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the proof: {exc}", path=proof_file) from None
    ok, detail = _check_proof_doc(doc, trusted, event_hash, log_id)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "detail": detail}))
    else:
        typer.echo(("valid: " if ok else "INVALID: ") + detail)
    raise typer.Exit(EXIT_OK if ok else EXIT_FINDINGS)


def _signed_root(
    note: object, trusted: list[TrustedKey], log_id: str | None
) -> tuple[int, bytes, str]:
    if not isinstance(note, str):
        raise ValueError("the proof carries no checkpoint note")
    cp = parse_checkpoint(note)
    cp.verify(trusted)
    origin = cp.checkpoint.origin
    if log_id is not None and origin != log_id:
        raise CheckpointError(f"the checkpoint is for log {origin!r}, not {log_id!r}", "fork")
    return cp.checkpoint.tree_size, cp.checkpoint.root, origin


def _check_proof_doc(
    doc: Any, trusted: list[TrustedKey], event_hash: str | None, log_id: str | None = None
) -> tuple[bool, str]:
    try:
        if not isinstance(doc, dict):
            raise ValueError("not a proof document")
        if "inclusion" in doc:
            proof = InclusionProof.from_json(doc["inclusion"])
            size, root, origin = _signed_root(doc.get("checkpoint"), trusted, log_id)
            if size != proof.tree_size:
                return False, f"proof is for size {proof.tree_size}, checkpoint for {size}"
            if event_hash is not None and event_hash.lower() != proof.event_hash.hex():
                return False, "the proof is for another event hash"
            if not proof.verify(root):
                return False, f"seq {proof.seq} is not in the signed tree of size {size}"
            return True, f"seq {proof.seq} is in the signed tree of size {size} of log {origin}"
        if "consistency" in doc:
            cproof = ConsistencyProof.from_json(doc["consistency"])
            s1, r1, o1 = _signed_root(doc.get("first"), trusted, log_id)
            s2, r2, o2 = _signed_root(doc.get("second"), trusted, log_id)
            if o1 != o2:
                return False, f"the checkpoints are of two logs ({o1!r}, {o2!r})"
            if (s1, s2) != (cproof.first, cproof.second):
                return False, "the proof's sizes do not match its checkpoints"
            if not cproof.verify(r1, r2):
                return False, f"signed trees of size {s1} and {s2} are not consistent (fork)"
            prefix = f"the signed tree of size {s1} is a prefix of the one of size {s2}"
            return True, f"{prefix} (log {o1})"
        raise ValueError("neither an inclusion nor a consistency proof")
    except CheckpointError as exc:
        return False, f"checkpoint: {exc} ({exc.kind})"
    except (ValueError, TypeError, KeyError) as exc:
        return False, f"malformed proof: {exc}"


def _event_table(events: list[AuditEvent], title: str) -> Table:
    table = Table(title=title)
    for col in ("seq", "time (UTC)", "action", "outcome", "actor", "resource", "reason"):
        table.add_column(col, overflow="fold")
    for ev in events:
        actor = ev.actor["id"] if ev.actor else "-"
        res = f"{ev.resource['type']}:{ev.resource['id'] or ''}" if ev.resource else "-"
        table.add_row(
            str(ev.seq), ev.ts[:23].replace("T", " "), ev.action, ev.outcome, str(actor),
            res, ev.reason or "",
        )  # fmt: skip
    return table


def _print_events(events: list[AuditEvent], as_json: bool, title: str) -> None:
    if as_json:
        for ev in events:
            typer.echo(json.dumps(ev.to_dict(), ensure_ascii=False))
    else:
        Console().print(_event_table(events, title))


@audit_app.command()
def tail(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", min=1, max=10_000, help="How many events.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The last N events."""
    with open_guard(ctx) as guard:
        events = guard.audit.tail(n)
    _print_events(events, as_json, f"last {len(events)} audit events")


def _when(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=name) from None
    return format_ts(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


@audit_app.command()
def search(
    ctx: typer.Context,
    action: Annotated[str | None, typer.Option(help="Action, or prefix like 'auth.*'.")] = None,
    outcome: Annotated[str | None, typer.Option(help="allow, deny, success, …")] = None,
    actor: Annotated[str | None, typer.Option(help="Actor (subject) id.")] = None,
    resource_type: Annotated[str | None, typer.Option(help="Resource type.")] = None,
    resource_id: Annotated[str | None, typer.Option(help="Resource id.")] = None,
    request_id: Annotated[str | None, typer.Option(help="Request id.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601, UTC).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Events by action, actor, resource and time, newest first."""
    flt = SearchFilter(
        action=action, outcome=outcome, actor=actor, resource_type=resource_type,
        resource_id=resource_id, request_id=request_id, since=_when(since, "--since"),
        until=_when(until, "--until"),
    )  # fmt: skip
    with open_guard(ctx) as guard:
        events = guard.audit.search(flt, limit=limit)
    _print_events(events, as_json, f"{len(events)} matching audit events")


@audit_app.command()
def archive(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the archived segment goes.")],
    older_than_days: Annotated[
        int | None, typer.Option(help="Archive events older than this (default: the minimum).")
    ] = None,
) -> None:
    """Export, verify and then prune the oldest checkpointed events (kept >= 6 months)."""
    with open_guard(ctx) as guard:
        least = guard.settings.audit.min_retention_days
        if older_than_days is not None and older_than_days < least:
            raise typer.BadParameter(
                f"audit events are kept at least {least} days ([audit] min_retention_days)",
                param_hint="--older-than-days",
            )
        rec = guard.audit.archive(out, older_than_days=older_than_days)
    if rec is None:
        typer.echo("nothing to archive: no checkpointed events are old enough")
    else:
        typer.echo(f"archived seq 1..{rec.details['through_seq']} to {out}; record seq {rec.seq}")


@audit_app.command()
def keygen(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Private key PEM (default: [audit] signing_key)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key.")] = False,
) -> None:
    """Create an Ed25519 checkpoint-signing key (mode 0600) and its public key beside it."""
    if out is None:
        settings = load_settings(ctx.obj.config if ctx.obj else None)
        out = settings.resolve(settings.audit.signing_key)
    name = write_signing_key(out, force=force)
    typer.echo(f"wrote {out} (private, 0600) and {_pub_path(out)}; key name {name}")


def _pub_path(private: Path) -> Path:
    return private.with_name(_key_name(private) + ".pub.pem")


def write_signing_key(path: Path, *, force: bool = False) -> str:
    """Write a new signing key to ``path`` (0600) and its public key beside it.

    :raises ConfigError: the file exists and ``force`` is not set.
    """
    if path.exists() and not force:
        raise ConfigError(
            "refusing to overwrite an existing signing key",
            path=path,
            hint="rotating keys? add the new one to a key history; or pass --force",
        )
    name = _key_name(path)
    key = generate_signing_key(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_pem())
    tmp.replace(path)
    _pub_path(path).write_bytes(key.public_pem())
    return name
