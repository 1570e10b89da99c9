"""The lint of what a migration will do: its SQL, parsed, against the expand-phase rules.

`lint_sql` is pure (SQL text in, findings out); `sources` reads the SQL a conveyor.yml
names (files of a tree, or a command's output) for `conveyor migrations lint` and for
the run's lint step. Needs the server extra (pglast, sqlglot).
"""

from __future__ import annotations

from conveyor.sqllint.findings import RULES, Finding, LintResult, Rule, Unparseable, merge


def lint_sql(
    sql: str, file: str, *, dialect: str = "postgres", session_lock_timeout: bool = True
) -> LintResult:
    """Lint one file's SQL (or one command's output, named `file`) for the expand phase.

    `session_lock_timeout`: the migration's session has a lock_timeout from conveyor
    (migrations.lock_timeout above 0), so statements need no SET of their own.
    """
    if dialect == "postgres":
        from conveyor.sqllint.postgres import lint_postgres

        return lint_postgres(sql, file, session_lock_timeout=session_lock_timeout)
    from conveyor.sqllint.other import lint_other

    return lint_other(sql, file, dialect)


__all__ = ["RULES", "Finding", "LintResult", "Rule", "Unparseable", "lint_sql", "merge"]
