"""The `migrations:` section of conveyor.yml: expand, contract, the SQL to lint, the timeouts.

Expand runs once per deployment before traffic moves (`hooks.migrate` is its older
name); contract removes what the previous release still needed, once nothing serves
it. `sql` says where the lint finds the SQL a migration will run: a command printing
it (`alembic upgrade head --sql`) or files of the repository (glob patterns).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from conveyor.config.base import Section, describe
from conveyor.config.durations import Duration, PositiveDuration
from conveyor.config.values import NonEmptyStr

SqlDialect = Literal["postgres", "sqlite", "mysql"]

# strong_migrations' defaults: a migration waits at most 10 s for a lock, and runs at
# most an hour.
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT = 3600.0
# the whole command, as long as one statement may run
DEFAULT_TIMEOUT = 3600.0


def _sql_file(value: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if not value.strip() or value.startswith("/") or ".." in parts:
        raise ValueError(
            "expected a path or glob inside the repository (relative, without ..), like "
            f"migrations/*.sql, got {describe(value)}"
        )
    return value


SqlFile = Annotated[str, AfterValidator(_sql_file), WithJsonSchema({"type": "string"})]


class MigrationSql(Section):
    """Where the lint reads the SQL: a command's output, or files of the repository."""

    command: NonEmptyStr | None = None
    files: list[SqlFile] = Field(default_factory=list)
    dialect: SqlDialect = "postgres"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"command": data}
        if isinstance(data, list):
            return {"files": data}
        if not isinstance(data, dict | MigrationSql):
            raise ValueError(
                "expected a command that prints the SQL (like 'alembic upgrade head --sql'), "
                "a list of files (like [migrations/*.sql]), or a mapping with command or "
                f"files and dialect, got {describe(data)}"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> MigrationSql:
        if (self.command is None) == (not self.files):
            raise ValueError(
                "expected either command (a command printing the SQL) or files (paths of "
                "SQL files), not both and not neither"
            )
        return self


class Migrations(Section):
    """Schema migrations in two phases, their lint and their PostgreSQL session limits."""

    expand: NonEmptyStr | None = Field(
        default=None,
        description="Run once per deployment on the first host, before traffic moves "
        "(hooks.migrate is its older name).",
    )
    contract: NonEmptyStr | None = Field(
        default=None,
        description="Removes what older releases needed; runs only once no host serves or "
        "keeps warm a release older than the one that brought it.",
    )
    sql: MigrationSql | None = Field(
        default=None,
        description="The SQL the lint checks before the release is built: a command printing "
        "it, or files.",
    )
    backup: NonEmptyStr | None = Field(
        default=None, description="Run, and must succeed, before any contract."
    )
    lock_timeout: Duration = Field(
        default=DEFAULT_LOCK_TIMEOUT,
        description="PostgreSQL lock_timeout of the migration's session (PGOPTIONS); 0: none.",
    )
    statement_timeout: Duration = Field(
        default=DEFAULT_STATEMENT_TIMEOUT,
        description="PostgreSQL statement_timeout of the migration's session (PGOPTIONS); 0: none.",
    )
    timeout: PositiveDuration = Field(
        default=DEFAULT_TIMEOUT,
        description="How long the expand or contract command (its backup included) may run "
        "on the host: killed after it, the deployment fails with its output.",
    )


def pg_options(lock_timeout: float, statement_timeout: float) -> str:
    """PGOPTIONS giving a migration's session its timeouts (milliseconds; 0 sets none).

    libpq sends them to the server at connect time, so psql, psycopg, pg_dump and every
    client built on libpq get them without code of their own (asyncpg, not on libpq,
    does not read PGOPTIONS).
    """
    limits = (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout))
    return " ".join(f"-c {name}={round(s * 1000)}" for name, s in limits if s > 0)
