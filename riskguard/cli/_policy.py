"""``riskguard policy …``: what security teams run on Casbin policies — test, explain,
lint, diff and least-privilege — and ``push`` / ``pull`` for a policy kept in the database
(``[access] adapter = "sql"``).

Exit codes: 0 ok, 1 findings (a failing case, coverage below the gate, a lint finding, a
difference, unused grants), 2 usage or configuration error. ``--json`` everywhere.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.engine import Engine

from riskguard.access import (
    AccessControl,
    FilePolicy,
    PolicyDiff,
    PolicyView,
    RedisReloadNotifier,
    SqlPolicy,
    diff_policies,
    least_privilege,
    lint_files,
    load_cases,
    load_snapshot,
    observed_requests,
    read_model,
    read_schema,
    run_cases,
)
from riskguard.access import explain as explain_request
from riskguard.audit import SearchFilter, format_ts
from riskguard.cli._app import EXIT_FINDINGS, EXIT_OK, JsonOpt, State, app
from riskguard.config import load_settings
from riskguard.errors import PolicyError
from riskguard.guard import Guard

__all__ = ["policy_app"]

policy_app = typer.Typer(
    help="Test, explain, lint and diff access policies; propose least privilege; push and "
    "pull the policy kept in the database.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="The Casbin model file.")]
PolicyOpt = Annotated[Path, typer.Option("--policy", "-p", help="The Casbin policy CSV file.")]
NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="The stored policy's name (default: access.policy_name)."),
]
_MODEL = Path("policies/model.conf")
_POLICY = Path("policies/policy.csv")


def _echo_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


@policy_app.command("test")
def test_cmd(
    tests: Annotated[Path, typer.Argument(help="A TOML test file or a folder of them.")] = Path(
        "policies/tests"
    ),
    model: ModelOpt = _MODEL,
    policy: PolicyOpt = _POLICY,
    min_coverage: Annotated[
        float | None,
        typer.Option("--min-coverage", min=0, max=100, help="Fail below this rule coverage (%)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run TOML cases of expected decisions; report per-rule coverage.

    Exit 0 when every case passes (and coverage meets --min-coverage), 1 otherwise.
    """
    ac = AccessControl(model, policy)
    view = PolicyView.of(ac.snapshot.model, ac.lines)
    report = run_cases(ac, load_cases(tests, view))
    gate_ok = min_coverage is None or report.coverage + 1e-9 >= min_coverage
    ok = not report.failures and gate_ok
    if as_json:
        doc = report.to_json() | {"ok": ok, "min_coverage": min_coverage}
        _echo_json(doc)
    else:
        con = _console()
        for r in report.failures:
            c = r.case
            req = " ".join(f"{k}={v}" for k, v in c.request.items() if v)
            con.print(f"FAIL {c.location} {c.name}: expected {c.expect}, got "
                      f"{'allow' if r.decision.allowed else 'deny'} ({r.decision.reason})\n"
                      f"     {req}")  # fmt: skip
        passed = len(report.results) - len(report.failures)
        con.print(f"{passed}/{len(report.results)} cases passed")
        con.print(
            f"rule coverage {report.coverage:.1f}% "
            f"({len(report.rules) - len(report.uncovered)}/{len(report.rules)} rules)"
        )
        for pl in report.uncovered:
            con.print(f"  not exercised: {pl.location}: {pl}")
        if not gate_ok:
            con.print(f"coverage {report.coverage:.1f}% is below --min-coverage {min_coverage:g}")
    raise typer.Exit(EXIT_OK if ok else EXIT_FINDINGS)


@policy_app.command("explain")
def explain_cmd(
    sub: Annotated[str, typer.Argument(help="The subject id.")],
    dom: Annotated[str, typer.Argument(help="The domain (m:1001, platform).")],
    obj: Annotated[str, typer.Argument(help="The object (order, customer.phone).")],
    act: Annotated[str, typer.Argument(help="The action (read, update).")],
    owner: Annotated[str | None, typer.Option(help="The resource's owner id.")] = None,
    assignee: Annotated[str | None, typer.Option(help="The resource's assignee id.")] = None,
    model: ModelOpt = _MODEL,
    policy: PolicyOpt = _POLICY,
    as_json: JsonOpt = False,
) -> None:
    """The decision, the role chain, the rule that allowed it and the deny that overrode
    it; for a deny no rule made, the nearest rule and the field that failed.

    Exit 0 allowed, 1 denied.
    """
    ac = AccessControl(model, policy)
    attrs = {k: v for k, v in (("owner", owner), ("assignee", assignee)) if v is not None}
    missing = sorted(attrs.keys() - ac.snapshot.attributes)
    if missing:
        raise typer.BadParameter(f"the model has no request attribute {missing[0]!r}")
    ex = explain_request(ac, sub, dom, obj, act, **attrs)
    if as_json:
        _echo_json(ex.to_json())
    else:
        con = _console()
        for line in ex.lines():
            con.print(line, markup=False)
    raise typer.Exit(EXIT_OK if ex.decision.allowed else EXIT_FINDINGS)


@policy_app.command("lint")
def lint_cmd(
    model: ModelOpt = _MODEL,
    policy: PolicyOpt = _POLICY,
    resources: Annotated[
        Path | None,
        typer.Option(
            "--resources", "-r", help="Resource schema (default: resources.toml beside the policy)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Duplicate, shadowed and always-overridden rules, undefined and ungranted roles, role
    cycles, wildcards over PII, objects and actions the resource schema does not declare,
    and parse errors. Exit 0 clean, 1 findings."""
    if resources is None:
        beside = policy.parent / "resources.toml"
        resources = beside if beside.is_file() else None
    schema = read_schema(resources) if resources is not None else None
    findings = lint_files(model, policy, schema)
    if as_json:
        _echo_json({"ok": not findings, "findings": [f.to_json() for f in findings]})
    else:
        con = _console()
        for f in findings:
            con.print(f"{f.location}: {f.kind}: {f.message}", markup=False)
        con.print(f"{len(findings)} finding(s)" if findings else "no findings")
    raise typer.Exit(EXIT_FINDINGS if findings else EXIT_OK)


@policy_app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The old policy CSV.")],
    new: Annotated[Path, typer.Argument(help="The new policy CSV.")],
    model: ModelOpt = _MODEL,
    as_json: JsonOpt = False,
) -> None:
    """Grants added and removed, each with a witness request the two versions decide
    differently (checked by deciding it with both). Exit 0 same decisions, 1 different."""
    result = diff_policies(read_model(model), FilePolicy(old).load(), FilePolicy(new).load())
    if as_json:
        _echo_json(result.to_json())
    else:
        _print_diff(result)
    raise typer.Exit(EXIT_FINDINGS if result.differs else EXIT_OK)


def _print_diff(result: PolicyDiff) -> None:
    con = _console()
    for c in result.changes:
        sign = "+" if c.change == "added" else "-"
        con.print(f"{sign} {c.line.location}: {c.line}", markup=False)
        w = c.witness
        if w is None:
            con.print("    no request found that the versions decide differently", markup=False)
        else:
            req = " ".join(f"{k}={v}" for k, v in w.request.items() if v)
            old = "allow" if w.old.allowed else "deny"
            new = "allow" if w.new.allowed else "deny"
            con.print(f"    witness: {req}: {old} → {new}", markup=False)
    if not result.changes:
        con.print("no changes")


def _since(value: str) -> str:
    m = re.fullmatch(r"(\d+)([dh])", value.strip())
    if m is None:
        raise typer.BadParameter(f"{value!r} is not a window like 90d or 12h", param_hint="--since")
    n = int(m.group(1))
    delta = timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)
    return format_ts(datetime.now(UTC) - delta)


@policy_app.command("least-privilege")
def least_privilege_cmd(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="The usage window: 90d, 30d, 12h.")] = "90d",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the reduced policy here.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000_000, help="Most audit events to read.")
    ] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """From the access.decision audit events since the window start: the rules, grants and
    roles never used, and a reduced policy that still allows every observed request (and
    nothing the current policy denies). Exit 0 nothing to remove, 1 unused grants found."""
    state: State = ctx.obj
    settings = load_settings(state.config)
    model = read_model(settings.resolve(settings.access.model))
    lines = FilePolicy(settings.resolve(settings.access.policy)).load()
    flt = SearchFilter(action="access.decision", since=_since(since))
    with Guard(settings) as guard:
        events = guard.audit.search(flt, limit=limit, newest_first=False)
    report = least_privilege(model, lines, observed_requests(model, lines, events))
    if not report.verified:  # never expected: the reduction is checked against the policy
        raise PolicyError(
            "the reduced policy would change an observed decision; nothing was written",
            path=settings.resolve(settings.access.policy),
            hint="please report this with the policy and the audit window",
        )
    if out is not None:
        header = [
            "# Reduced by `riskguard policy least-privilege --since "
            f"{since}` from {len(report.observed)} audited decisions.",
            "# Every observed allowed request is still allowed; nothing new is allowed.",
        ]
        body = [str(pl) for pl in report.reduced]
        out.write_text("\n".join([*header, *body]) + "\n", encoding="utf-8")
    if as_json:
        _echo_json(report.to_json() | {"out": str(out) if out else None})
    else:
        con = _console()
        con.print(f"{len(report.observed)} audited decisions since {since}", markup=False)
        for pl in report.unused_rules:
            con.print(f"unused rule  {pl.location}: {pl}", markup=False)
        for pl in report.unused_grants:
            con.print(f"unused grant {pl.location}: {pl}", markup=False)
        if report.unused_roles:
            con.print("unused roles: " + ", ".join(report.unused_roles), markup=False)
        con.print(f"reduced policy: {len(report.reduced)} of {len(lines)} lines, verified"
                  + (f", written to {out}" if out else ""), markup=False)  # fmt: skip
    unused = report.unused_rules or report.unused_grants
    raise typer.Exit(EXIT_FINDINGS if unused else EXIT_OK)


def _store(engine: Engine, name: str) -> SqlPolicy:
    try:
        return SqlPolicy(engine, name=name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--name") from None


@policy_app.command("push")
def push_cmd(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="The policy CSV (default: access.policy).")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="The Casbin model (default: access.model)."),
    ] = None,
    name: NameOpt = None,
    notify: Annotated[
        bool,
        typer.Option("--notify/--no-notify", help="Publish a reload notice when redis.url is set."),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Store a policy CSV in the database (rg_access_policy) after checking it as an
    enforcer would, in one transaction; then, when redis.url is set, tell the running
    enforcers to reload. Exit 0 stored, 1 invalid policy or storage error (nothing
    stored)."""
    state: State = ctx.obj
    settings = load_settings(state.config)
    name = name or settings.access.policy_name
    path = file if file is not None else settings.resolve(settings.access.policy)
    model_def = read_model(model if model is not None else settings.resolve(settings.access.model))
    # Checked on the file first, so that an error names policy.csv:line.
    snap = load_snapshot(model_def, FilePolicy(path))
    with Guard(settings) as guard:
        store = _store(guard.engine, name)
        version = store.replace(snap.lines, model=model_def)
    doc: dict[str, Any] = {
        "ok": True,
        "name": name,
        "file": str(path),
        "version": version,
        "lines": len(snap.lines),
        "hash": snap.hash,
        "notified": None,
    }
    con = _console()
    if not as_json:
        stored = f"stored {len(snap.lines)} lines of {path} as sql:{name} version {version}"
        con.print(f"{stored} ({snap.hash[:19]})", markup=False)
    url = settings.redis.url
    if notify and url is not None:
        # Stored already: a Redis failure below is reported (exit 1) but changes nothing.
        with RedisReloadNotifier.from_url(url, prefix=settings.redis.prefix, name=name) as n:
            doc["notified"] = n.notify(snap.hash)
        if not as_json:
            sent = f"reload notice sent on {n.channel} to {doc['notified']} listener(s)"
            con.print(sent, markup=False)
    elif not as_json:
        why = "no [redis] url" if notify else "--no-notify"
        con.print(f"no reload notice sent ({why})", markup=False)
    if as_json:
        _echo_json(doc)
    raise typer.Exit(EXIT_OK)


@policy_app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    name: NameOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the CSV here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the policy stored in the database as Casbin CSV: line n is the rule that
    decisions and errors call sql:<name>:n. Exit 0, 1 when no policy of that name is
    stored."""
    state: State = ctx.obj
    settings = load_settings(state.config)
    name = name or settings.access.policy_name
    with Guard(settings) as guard:
        store = _store(guard.engine, name)
        marker = store.marker()  # read first: the lines are this version or a later one
        lines = store.load()
    text = "".join(f"{pl}\n" for pl in lines)
    if out is not None:
        out.write_text(text, encoding="utf-8")
    if as_json:
        version = int(marker.partition(":")[0]) if marker else None
        rows = [{"line": pl.line, "ptype": pl.ptype, "values": list(pl.values)} for pl in lines]
        _echo_json(
            {"name": name, "version": version, "out": str(out) if out else None, "lines": rows}
        )
    elif out is not None:
        _console().print(f"wrote {len(lines)} lines of sql:{name} to {out}", markup=False)
    else:
        typer.echo(text, nl=False)
    raise typer.Exit(EXIT_OK)
