"""`conveyor migrations lint`: the lint of a migration's SQL, run locally as a run runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from conveyor.cli.client import fail
from conveyor.cli.render import err
from conveyor.config import ConfigError, load_config

migrations_cli = typer.Typer(
    help="Schema migrations: the lint of what they will do.", no_args_is_help=True
)

DIALECTS = ("postgres", "sqlite", "mysql")


@migrations_cli.command("lint")
def lint(
    files: Annotated[
        list[Path] | None, typer.Argument(help="SQL files (default: migrations.sql).")
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="A command printing the SQL, run here.")
    ] = None,
    dialect: Annotated[
        str | None, typer.Option(help="postgres, sqlite or mysql (default: conveyor.yml's).")
    ] = None,
    config_file: Annotated[
        Path, typer.Option("--config", help="The conveyor.yml read for what is not given.")
    ] = Path("conveyor.yml"),
) -> None:
    """Check a migration's SQL against the expand-phase rules; exit 1 on findings."""
    try:
        from conveyor.sqllint import lint_sql, merge
        from conveyor.sqllint.sources import (
            SQL_DIGEST_ENV,
            SqlSourceError,
            command_output,
            read_files,
            sources_digest,
        )
    except ImportError as exc:  # an agent's install, without the server extra
        fail(
            escape(f"the lint needs pglast and sqlglot: pip install 'conveyor[server]' ({exc})"), 2
        )
    session_timeout = True
    sql = None
    if config_file.is_file():
        try:
            config = load_config(config_file)
        except ConfigError as exc:
            fail(escape(str(exc)), 2)
        sql = config.migrations.sql
        session_timeout = config.migrations.lock_timeout > 0
    if files and command:
        fail("give SQL files or --command, not both", 2)
    root = config_file.parent if not files and not command else Path.cwd()
    chosen = dialect or (sql.dialect if sql else "postgres")
    if chosen not in DIALECTS:
        fail(escape(f"--dialect: expected one of {', '.join(DIALECTS)}, got {chosen!r}"), 2)
    try:
        if files:
            sources = read_files(Path.cwd(), [str(f) for f in files])
        elif command or (sql and sql.command):
            cmd = command or (sql.command if sql else None) or ""
            sources = [(f"`{cmd}`", command_output(cmd, root))]
        elif sql and sql.files:
            sources = read_files(root, list(sql.files))
        else:
            fail(
                f"no SQL to lint: give files or --command, or set migrations.sql in {config_file}",
                2,
            )
    except SqlSourceError as exc:
        fail(escape(str(exc)), 2)
    digest_to = os.environ.get(SQL_DIGEST_ENV)
    if digest_to:  # the run's lint step: what the release's migration hash covers
        Path(digest_to).write_text(sources_digest(sources) + "\n", encoding="utf-8")
    result = merge(
        [
            lint_sql(text, name, dialect=chosen, session_lock_timeout=session_timeout)
            for name, text in sources
        ]
    )
    sys.stdout.write(result.report())
    if not result.ok:
        said = (
            "migrations lint: the expand phase would break the release still serving; "
            "fix it as each finding says, or waive a statement with a comment "
            "`-- conveyor: waive RULE: why`"
            if result.failed
            else "migrations lint: the SQL does not parse (see the line and the parser's message)"
        )
        err.print(
            said,
            style="red",
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(migrations_cli, name="migrations")
