"""The expand-phase lint, rule by rule, on PostgreSQL's parser and on sqlglot's.

Rule names are squawk's (https://squawkhq.com/docs/rules); where squawk itself (the
`squawk-cli` npm package, 2.x) answers differently on the same SQL, the case says so.
"""

from __future__ import annotations

import pytest

from conveyor.sqllint import RULES, lint_sql

PG = [
    # (case, sql, rules found)
    ("drop column", "ALTER TABLE users DROP COLUMN name;", ["ban-drop-column"]),
    ("drop table", "DROP TABLE users;", ["ban-drop-table"]),
    ("rename column", "ALTER TABLE users RENAME COLUMN name TO full_name;", ["renaming-column"]),
    ("rename table", "ALTER TABLE users RENAME TO people;", ["renaming-table"]),
    ("type change", "ALTER TABLE users ALTER COLUMN id TYPE bigint;", ["changing-column-type"]),
    ("not null, no default", "ALTER TABLE u ADD COLUMN n int NOT NULL;", ["adding-required-field"]),
    ("not null with default", "ALTER TABLE u ADD COLUMN n int NOT NULL DEFAULT 0;", []),
    (
        "identity is a default",
        "ALTER TABLE u ADD COLUMN n int NOT NULL GENERATED ALWAYS AS IDENTITY;",
        [],
    ),
    ("nullable column", "ALTER TABLE u ADD COLUMN n text;", []),
    ("set not null", "ALTER TABLE u ALTER COLUMN n SET NOT NULL;", ["adding-not-nullable-field"]),
    ("index", "CREATE INDEX i ON u (n);", ["require-concurrent-index-creation"]),
    ("unique index", "CREATE UNIQUE INDEX i ON u (n);", ["require-concurrent-index-creation"]),
    ("concurrent index", "CREATE INDEX CONCURRENTLY i ON u (n);", []),
    (
        "foreign key",
        "ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id);",
        ["adding-foreign-key-constraint"],
    ),
    (
        "foreign key not valid",
        "ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) NOT VALID;",
        [],
    ),
    (
        "inline foreign key",  # a column's REFERENCES cannot say NOT VALID
        "ALTER TABLE o ADD COLUMN u int REFERENCES u (id);",
        ["adding-foreign-key-constraint"],
    ),
    ("check", "ALTER TABLE u ADD CONSTRAINT c CHECK (n > 0);", ["constraint-missing-not-valid"]),
    ("check not valid", "ALTER TABLE u ADD CONSTRAINT c CHECK (n > 0) NOT VALID;", []),
    ("validate", "ALTER TABLE u VALIDATE CONSTRAINT c;", []),
    (
        "a new table is free",
        "CREATE TABLE t (id int PRIMARY KEY, u int);\n"
        "CREATE INDEX i ON t (u);\n"
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id);\n"
        "ALTER TABLE t ADD COLUMN n int NOT NULL;",
        [],
    ),
    (
        "several in one statement",
        "ALTER TABLE u DROP COLUMN a, ALTER COLUMN b TYPE text;",
        ["ban-drop-column", "changing-column-type"],
    ),
    ("data is not schema", "UPDATE u SET n = 0 WHERE n IS NULL; INSERT INTO u VALUES (1);", []),
]


@pytest.mark.parametrize(
    ("sql", "rules"), [pytest.param(sql, rules, id=case) for case, sql, rules in PG]
)
def test_postgres_rules(sql: str, rules: list[str]) -> None:
    result = lint_sql(sql, "m.sql")
    assert [f.rule for f in result.findings] == rules
    assert result.ok == (not rules) and not result.errors


SQLITE = [
    ("drop column", "ALTER TABLE users DROP COLUMN name;", ["ban-drop-column"]),
    ("drop table", "DROP TABLE users;", ["ban-drop-table"]),
    ("rename column", "ALTER TABLE users RENAME COLUMN name TO full;", ["renaming-column"]),
    ("rename table", "ALTER TABLE users RENAME TO people;", ["renaming-table"]),
    (
        "not null, no default",
        "ALTER TABLE u ADD COLUMN n INTEGER NOT NULL;",
        ["adding-required-field"],
    ),
    ("not null with default", "ALTER TABLE u ADD COLUMN n INTEGER NOT NULL DEFAULT 0;", []),
    ("index: no CONCURRENTLY in SQLite", "CREATE INDEX i ON u (n);", []),
    ("new table", "CREATE TABLE t (id INTEGER NOT NULL);", []),
]


@pytest.mark.parametrize(
    ("sql", "rules"), [pytest.param(sql, rules, id=case) for case, sql, rules in SQLITE]
)
def test_sqlite_rules(sql: str, rules: list[str]) -> None:
    result = lint_sql(sql, "m.sql", dialect="sqlite")
    assert [f.rule for f in result.findings] == rules
    assert not result.errors


@pytest.mark.parametrize(
    ("sql", "rules"),
    [
        ("ALTER TABLE u MODIFY COLUMN n BIGINT;", ["changing-column-type"]),
        ("ALTER TABLE u CHANGE n m INT;", ["renaming-column"]),
        ("ALTER TABLE u DROP COLUMN n;", ["ban-drop-column"]),
    ],
)
def test_mysql_rules(sql: str, rules: list[str]) -> None:
    assert [f.rule for f in lint_sql(sql, "m.sql", dialect="mysql").findings] == rules


LOCKS = [
    # (case, sql, session lock_timeout from conveyor, rules)
    ("conveyor's session timeout covers it", "ALTER TABLE u ADD COLUMN n text;", True, []),
    ("none at all", "ALTER TABLE u ADD COLUMN n text;", False, ["require-lock-timeout"]),
    ("a SET before it", "SET lock_timeout = '2s';\nALTER TABLE u ADD COLUMN n text;", False, []),
    (
        "SET LOCAL",
        "BEGIN; SET LOCAL lock_timeout TO 2000; ALTER TABLE u ADD n text; COMMIT;",
        False,
        [],
    ),
    (
        "set to 0 turns it off",
        "SET lock_timeout = 0;\nALTER TABLE u ADD COLUMN n text;",
        True,
        ["require-lock-timeout"],
    ),
    (
        "RESET returns to the session's",
        "SET lock_timeout = 0;\nRESET lock_timeout;\nALTER TABLE u ADD COLUMN n text;",
        True,
        [],
    ),
    ("no lock taken", "SELECT 1; UPDATE alembic_version SET version_num = 'a';", False, []),
]


@pytest.mark.parametrize(
    ("sql", "session", "rules"),
    [pytest.param(sql, session, rules, id=case) for case, sql, session, rules in LOCKS],
)
def test_each_locking_statement_is_under_a_lock_timeout(
    sql: str, session: bool, rules: list[str]
) -> None:
    result = lint_sql(sql, "m.sql", session_lock_timeout=session)
    assert [f.rule for f in result.findings] == rules


def test_a_finding_says_file_line_rule_why_and_the_safe_way() -> None:
    sql = (
        "-- adds the new column\nALTER TABLE u ADD COLUMN full_name text;\n\n\n"
        "ALTER TABLE u\n  DROP COLUMN name;\n"
    )
    result = lint_sql(sql, "migrations/0002.sql")
    [finding] = result.findings
    assert (finding.file, finding.line, finding.rule) == (
        "migrations/0002.sql",
        5,
        "ban-drop-column",
    )
    text = str(finding)
    assert text.startswith("migrations/0002.sql:5: ban-drop-column: a column is dropped: ")
    assert "ALTER TABLE u DROP COLUMN name" in text
    assert "why: the release still serving" in text
    assert "instead: stop reading the column" in text and "migrations.contract" in text
    assert result.report().endswith(
        "3 statements, 1 findings, 0 waived\n"
    ) or result.report().endswith("2 statements, 1 findings, 0 waived\n")


WAIVERS = [
    (
        "before",
        "-- conveyor: waive ban-drop-column: unused since v41\nALTER TABLE u DROP COLUMN a;",
        "unused since v41",
    ),
    ("same line", "ALTER TABLE u DROP COLUMN a; -- conveyor: waive ban-drop-column: gone", "gone"),
    (
        "block comment",
        "/* conveyor: waive ban-drop-column, renaming-column: ok */ ALTER TABLE u DROP COLUMN a;",
        "ok",
    ),
    (
        "no reason: no waiver",
        "-- conveyor: waive ban-drop-column\nALTER TABLE u DROP COLUMN a;",
        None,
    ),
    ("other rule", "-- conveyor: waive ban-drop-table: x\nALTER TABLE u DROP COLUMN a;", None),
    (
        "belongs to the statement before",
        "SELECT 1; -- conveyor: waive ban-drop-column: not this one\nALTER TABLE u DROP COLUMN a;",
        None,
    ),
]


@pytest.mark.parametrize(("dialect"), ["postgres", "sqlite"])
@pytest.mark.parametrize(
    ("sql", "reason"), [pytest.param(sql, reason, id=case) for case, sql, reason in WAIVERS]
)
def test_an_explicit_waiver_silences_its_rule_and_is_recorded(
    sql: str, reason: str | None, dialect: str
) -> None:
    if dialect == "sqlite" and sql.startswith("SELECT 1;"):
        pytest.skip("sqlglot attaches a comment after ';' to the statement it ends")
    result = lint_sql(sql, "m.sql", dialect=dialect)
    [finding] = result.findings
    assert finding.waived == reason
    assert result.ok == (reason is not None)
    if reason is not None:
        assert f"waived: {reason}" in result.report()
        assert "1 waived" in result.report()


@pytest.mark.parametrize(
    ("dialect", "line", "message"),
    [
        ("postgres", 3, 'syntax error at or near "int"'),
        ("sqlite", 3, "does not know this statement"),
    ],
)
def test_unparseable_sql_names_the_line_and_the_parsers_message(
    dialect: str, line: int, message: str
) -> None:
    sql = "SELECT 1;\n\nALTER TABLE t ADD COLUM x int;\n"
    result = lint_sql(sql, "bad.sql", dialect=dialect)
    [error] = result.errors
    assert (error.file, error.line) == ("bad.sql", line)
    assert message in error.message
    assert not result.ok
    assert str(error).startswith(f"bad.sql:{line}: cannot parse the SQL: ")


def test_every_rule_says_why_and_the_safe_way() -> None:
    for rule in RULES.values():
        assert rule.why and rule.safe and rule.title
