"""The lint against squawk itself (`npm install squawk-cli`, 2.66 when this was written),
on the same SQL as tests/sqllint/test_rules.py's PostgreSQL cases.

Run when a `squawk` is found (CONVEYOR_SQUAWK=path/to/squawk, or on PATH); skipped
otherwise. Where the two differ, on purpose:

- squawk's require-lock-timeout and require-statement-timeout want a SET in every file;
  conveyor gives the migration's session both through PGOPTIONS, so only a statement
  whose lock_timeout is turned off (migrations.lock_timeout: 0, or SET lock_timeout = 0)
  is a finding, as require-lock-timeout.
- squawk's style rules (prefer-robust-stmts, prefer-bigint-over-int, ...) are not the
  expand-phase rules and are left out.
- a foreign key without NOT VALID: squawk reports it twice (adding-foreign-key-constraint
  and constraint-missing-not-valid); conveyor once, as the first.
- a table created by the same migration is new and unused: conveyor lets its indexes,
  constraints and NOT NULL columns be; squawk (outside a transaction) does not.
- an identity column: squawk's adding-field-with-default (it rewrites the table); not
  checked by conveyor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor.sqllint import lint_sql
from tests.sqllint.test_rules import PG

# scripts/setup.sh (make sync) installs it there from npm
_INSTALLED = Path(__file__).resolve().parents[2] / ".cache/squawk/node_modules/.bin/squawk"
SQUAWK = (
    os.environ.get("CONVEYOR_SQUAWK")
    or (str(_INSTALLED) if _INSTALLED.exists() else None)
    or shutil.which("squawk")
)
NOT_EXPAND_RULES = {
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "require-lock-timeout",
    "require-statement-timeout",
}
# (case, rules squawk reports beyond ours)
KNOWN = {
    "foreign key": {"constraint-missing-not-valid"},
    "identity is a default": {"adding-field-with-default"},
    "a new table is free": {
        "adding-foreign-key-constraint",
        "adding-required-field",
        "constraint-missing-not-valid",
        "require-concurrent-index-creation",
    },
}


@pytest.mark.skipif(SQUAWK is None, reason="squawk not installed (npm install squawk-cli)")
@pytest.mark.parametrize(("case", "sql"), [pytest.param(c, s, id=c) for c, s, _ in PG])
def test_same_findings_as_squawk(case: str, sql: str, tmp_path: Path) -> None:
    assert SQUAWK is not None
    (tmp_path / "m.sql").write_text(sql + "\n")
    done = subprocess.run(
        [SQUAWK, "--reporter", "json", "m.sql"], cwd=tmp_path, capture_output=True, text=True
    )
    theirs = {v["rule_name"] for v in json.loads(done.stdout or "[]")} - NOT_EXPAND_RULES
    ours = {f.rule for f in lint_sql(sql, "m.sql").findings}
    assert theirs - ours == KNOWN.get(case, set())
    assert ours <= theirs | {"require-lock-timeout"}
