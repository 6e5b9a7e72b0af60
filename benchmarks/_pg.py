"""A private PostgreSQL schema for a benchmark run (shared by the benchmark scripts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from sqlalchemy.engine import make_url

from riskguard import db


@contextmanager
def private_schema(pg_url: str, console: Console) -> Iterator[str | None]:
    """A URL whose ``search_path`` is a new schema, dropped (with everything in it) after
    the block; ``None``, with the reason printed, when PostgreSQL is unreachable."""
    name = "rgbench_" + uuid.uuid4().hex[:10]
    admin = None
    try:
        admin = db.create_engine(pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    except Exception as exc:
        if admin is not None:
            admin.dispose()
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
        console.print(f"[yellow]skipped: PostgreSQL unreachable or refused ({reason})")
        yield None
        return
    try:
        yield (
            make_url(db.normalise_url(pg_url))
            .update_query_dict({"options": f"-csearch_path={name}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()
        console.print(f"dropped schema {name}")
