"""The `migrations:` section: its keys, shorthands, defaults, and hooks.migrate as its alias."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, parse_config
from conveyor.config.migrations import pg_options

APP = "app: shop\n"


def test_defaults_and_every_key() -> None:
    config = parse_config(APP)
    assert config.expand_command is None
    assert config.migrations.sql is None
    assert (config.migrations.lock_timeout, config.migrations.statement_timeout) == (10.0, 3600.0)
    assert config.migrations.timeout == 3600.0
    text = APP + (
        "migrations:\n"
        "  expand: ./bin/migrate-expand\n"
        "  contract: ./bin/migrate-contract\n"
        "  sql: alembic upgrade head --sql\n"
        "  backup: ./bin/backup\n"
        "  lock_timeout: 2s\n"
        "  statement_timeout: 5m\n"
        "  timeout: 20m\n"
    )
    m = parse_config(text).migrations
    assert (m.expand, m.contract, m.backup) == (
        "./bin/migrate-expand",
        "./bin/migrate-contract",
        "./bin/backup",
    )
    assert m.sql is not None and m.sql.command == "alembic upgrade head --sql"
    assert m.sql.dialect == "postgres" and m.sql.files == []
    assert (m.lock_timeout, m.statement_timeout, m.timeout) == (2.0, 300.0, 1200.0)
    assert parse_config(text).expand_command == "./bin/migrate-expand"


def test_sql_as_files_or_a_mapping() -> None:
    files = parse_config(APP + "migrations:\n  sql: [migrations/*.sql, db/up.sql]\n")
    assert files.migrations.sql is not None
    assert files.migrations.sql.files == ["migrations/*.sql", "db/up.sql"]
    text = APP + "migrations:\n  sql: {command: ./bin/print-sql, dialect: sqlite}\n"
    sql = parse_config(text).migrations.sql
    assert sql is not None and (sql.command, sql.dialect) == ("./bin/print-sql", "sqlite")


def test_hooks_migrate_is_the_alias_of_expand() -> None:
    config = parse_config(APP + "hooks:\n  migrate: ./bin/migrate\n")
    assert config.expand_command == "./bin/migrate"
    assert config.migrations.expand is None


BROKEN = [
    (
        "both expand and hooks.migrate",
        "hooks:\n  migrate: ./a\nmigrations:\n  expand: ./b\n",
        3,
        3,
        "hooks.migrate is the older name of migrations.expand and both are set",
    ),
    ("unknown key", "migrations:\n  expnad: ./b\n", 3, 3, "expnad"),
    ("empty expand", "migrations:\n  expand: ''\n", 3, 11, "non-empty"),
    ("sql a number", "migrations:\n  sql: 3\n", 3, 8, "a command that prints the SQL"),
    (
        "sql both",
        "migrations:\n  sql: {command: x, files: [a.sql]}\n",
        3,
        8,
        "either command",
    ),
    ("sql outside", "migrations:\n  sql: [../up.sql]\n", 3, 9, "inside the repository"),
    ("dialect", "migrations:\n  sql: {files: [a.sql], dialect: oracle}\n", 3, 34, "postgres"),
    ("lock_timeout", "migrations:\n  lock_timeout: soon\n", 3, 17, "a duration like"),
    ("timeout 0", "migrations:\n  timeout: 0s\n", 3, 12, "a duration above zero"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [pytest.param(t, line, col, m, id=case) for case, t, line, col, m in BROKEN],
)
def test_a_wrong_migrations_section_says_what_was_wrong(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(APP + text, "conveyor.yml")
    issues = caught.value.issues
    assert len(issues) == 1, str(caught.value)
    assert message in issues[0].message, str(caught.value)
    assert (issues[0].line, issues[0].column) == (line, column), str(caught.value)


@pytest.mark.parametrize(
    ("lock", "statement", "expected"),
    [
        (10.0, 3600.0, "-c lock_timeout=10000 -c statement_timeout=3600000"),
        (0.5, 0.0, "-c lock_timeout=500"),
        (0.0, 0.0, ""),
    ],
)
def test_pg_options(lock: float, statement: float, expected: str) -> None:
    assert pg_options(lock, statement) == expected
