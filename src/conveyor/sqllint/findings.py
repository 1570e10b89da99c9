"""What the migration lint reports: findings, waivers, parse errors, and their rules.

The rules are those squawk (https://squawkhq.com/docs/rules) and strong_migrations
agree on for the expand phase, named as squawk names them so that a finding can be
looked up there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str  # squawk's name
    title: str
    why: str  # why it hurts
    safe: str  # the safe way


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "ban-drop-column",
            "a column is dropped",
            "the release still serving (and the warm one a rollback returns to) may read it, "
            "and its queries fail as soon as the migration commits",
            "stop reading the column in one release, then drop it in migrations.contract, "
            "once no release that reads it serves or keeps warm",
        ),
        Rule(
            "ban-drop-table",
            "a table is dropped",
            "the release still serving may read it, and its queries fail at once",
            "stop using the table in one release, then drop it in migrations.contract",
        ),
        Rule(
            "renaming-column",
            "a column is renamed",
            "the release still serving reads the old name, which is gone: its queries fail",
            "add the new column (expand), write both and backfill, move reads to it, and drop "
            "the old one in migrations.contract",
        ),
        Rule(
            "renaming-table",
            "a table is renamed",
            "the release still serving uses the old name, which is gone: its queries fail",
            "create the new table (or a view under one of the names), move the code to it, "
            "and drop the old name in migrations.contract",
        ),
        Rule(
            "changing-column-type",
            "a column's type is changed",
            "most type changes rewrite the table under an ACCESS EXCLUSIVE lock, blocking "
            "every read and write for the rewrite, and the serving release may not read the "
            "new type",
            "add a column of the new type, backfill it in batches, move the code to it, and "
            "drop the old one in migrations.contract",
        ),
        Rule(
            "adding-required-field",
            "a NOT NULL column is added without a default",
            "the serving release's inserts do not set it and fail, and on a table with rows "
            "the statement itself fails",
            "add it with a DEFAULT (instant since PostgreSQL 11), or nullable, backfill, and "
            "set NOT NULL later",
        ),
        Rule(
            "adding-not-nullable-field",
            "SET NOT NULL on an existing column",
            "it scans the whole table under an ACCESS EXCLUSIVE lock, blocking reads and "
            "writes while it checks",
            "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in another "
            "statement, then SET NOT NULL (PostgreSQL 12+ uses the valid check and skips the "
            "scan)",
        ),
        Rule(
            "require-concurrent-index-creation",
            "an index is built without CONCURRENTLY",
            "CREATE INDEX blocks every write to the table until the whole index is built",
            "CREATE INDEX CONCURRENTLY (outside a transaction block)",
        ),
        Rule(
            "adding-foreign-key-constraint",
            "a foreign key is added without NOT VALID",
            "validating it scans the table while writes to both tables wait on its lock",
            "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in another statement "
            "(it takes a lock that lets writes go on)",
        ),
        Rule(
            "constraint-missing-not-valid",
            "a check constraint is added without NOT VALID",
            "validating it scans the whole table under an ACCESS EXCLUSIVE lock",
            "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in another statement",
        ),
        Rule(
            "require-lock-timeout",
            "a statement that takes a lock runs without a lock_timeout",
            "waiting behind a long transaction for its lock, it queues every later query "
            "of the table behind it: the app stops answering",
            "keep migrations.lock_timeout above 0 (conveyor sets it for the migration's "
            "session), or SET lock_timeout = '5s' before the statement",
        ),
    )
}

# -- conveyor: waive ban-drop-column, renaming-column: the column is unused since v41
WAIVER_RE = re.compile(
    r"conveyor:\s*waive\s+(?P<rules>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*(?::\s*(?P<reason>.*))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Waiver:
    rules: frozenset[str]
    reason: str


def waivers_in(comment: str) -> list[Waiver]:
    """The waivers a comment states (a waiver without a reason states none)."""
    found = []
    for line in comment.splitlines():
        m = WAIVER_RE.search(line.strip().rstrip("*/").strip())
        if m and (m.group("reason") or "").strip():
            rules = frozenset(r.strip().lower() for r in m.group("rules").split(","))
            found.append(Waiver(rules, (m.group("reason") or "").strip()))
    return found


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    rule: str
    statement: str  # the statement, shortened
    waived: str | None = None  # the waiver's reason, when one silences it

    def __str__(self) -> str:
        rule = RULES[self.rule]
        head = f"{self.file}:{self.line}: {self.rule}: {rule.title}: {self.statement}"
        if self.waived is not None:
            return f"{head}\n  waived: {self.waived}"
        return f"{head}\n  why: {rule.why}\n  instead: {rule.safe}"


@dataclass(frozen=True)
class Unparseable:
    file: str
    line: int
    message: str  # the parser's

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: cannot parse the SQL: {self.message}"


@dataclass(frozen=True)
class LintResult:
    findings: list[Finding]
    errors: list[Unparseable]
    statements: int

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.waived is None]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    def report(self) -> str:
        """The whole report, as the run's log and `conveyor migrations lint` print it."""
        lines = [str(x) for x in [*self.errors, *self.findings]]
        waived = len(self.findings) - len(self.failed)
        summary = f"{self.statements} statements, {len(self.failed)} findings, {waived} waived" + (
            f", {len(self.errors)} unparseable" if self.errors else ""
        )
        return "\n".join([*lines, summary]) + "\n"


def merge(results: list[LintResult]) -> LintResult:
    return LintResult(
        [f for r in results for f in r.findings],
        [e for r in results for e in r.errors],
        sum(r.statements for r in results),
    )


def shorten(statement: str, limit: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(0, offset)) + 1
