"""The expand-phase lint of PostgreSQL migrations, on PostgreSQL's own parser (pglast).

Pure: SQL text in, findings out. A statement's waiver comments are those between the
end of the statement before it and its own end (`-- conveyor: waive RULE: reason`).
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType, VariableSetKind
from pglast.parser import ParseError, scan

from conveyor.sqllint.findings import (
    Finding,
    LintResult,
    Unparseable,
    Waiver,
    line_of,
    shorten,
    waivers_in,
)

# statements that take a lock other sessions' queries may queue behind
_LOCKING = (
    ast.AlterTableStmt,
    ast.RenameStmt,
    ast.IndexStmt,
    ast.DropStmt,
    ast.TruncateStmt,
    ast.CreateTrigStmt,
    ast.AlterEnumStmt,
)
_DEFAULTS = {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED}


def lint_postgres(sql: str, file: str, *, session_lock_timeout: bool) -> LintResult:
    """Lint one file (or command output) of PostgreSQL; `session_lock_timeout`: conveyor
    gives the migration's session a lock_timeout (migrations.lock_timeout above 0)."""
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        return LintResult([], [Unparseable(file, line_of(sql, offset), str(exc.args[0]))], 0)
    comments = [
        (tok.start, sql[tok.start : tok.end + 1])
        for tok in scan(sql)
        if tok.name in ("SQL_COMMENT", "C_COMMENT")
    ]
    spans = []
    for raw in statements:
        start = raw.stmt_location or 0
        spans.append((start, start + (raw.stmt_len or len(sql) - start)))
    owned = _owners(sql, spans, comments)
    findings: list[Finding] = []
    new_tables: set[str] = set()
    lock_timeout = session_lock_timeout
    for i, raw in enumerate(statements):
        start, end = spans[i]
        waivers = [w for text in owned[i] for w in waivers_in(text)]
        stmt = raw.stmt
        if isinstance(stmt, ast.VariableSetStmt) and stmt.name == "lock_timeout":
            lock_timeout = _timeout_set(stmt, session_lock_timeout)
            continue
        if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
            new_tables.add(_name(stmt.relation))
        rules = list(_rules(stmt, new_tables)) if stmt is not None else []
        if isinstance(stmt, _LOCKING) and not lock_timeout:
            rules.append("require-lock-timeout")
        text = shorten(sql[start:end])
        line = line_of(sql, start)
        findings.extend(_finding(file, line, rule, text, waivers) for rule in rules)
    return LintResult(findings, [], len(statements))


def _owners(
    sql: str, spans: list[tuple[int, int]], comments: list[tuple[int, str]]
) -> list[list[str]]:
    """Each statement's comments: those inside it or before it, and the one closing the
    line it ends on (`DROP ...; -- conveyor: waive ...` waives that DROP)."""
    owned: list[list[str]] = [[] for _ in spans]
    for at, text in comments:
        for i, (_start, end) in enumerate(spans):
            if at < end or "\n" not in sql[end:at]:
                owned[i].append(text)
                break
    return owned


def _finding(file: str, line: int, rule: str, text: str, waivers: list[Waiver]) -> Finding:
    reason = next((w.reason for w in waivers if rule in w.rules), None)
    return Finding(file, line, rule, text, reason)


def _timeout_set(stmt: ast.VariableSetStmt, session: bool) -> bool:
    """Whether lock_timeout is on after this SET or RESET."""
    if stmt.kind in (VariableSetKind.VAR_RESET, VariableSetKind.VAR_SET_DEFAULT):
        return session
    for arg in stmt.args or ():
        value = getattr(getattr(arg, "val", None), "ival", None)
        if value is None:
            value = getattr(getattr(arg, "val", None), "sval", None)
        if value is not None and str(value).strip() not in ("0", "0ms", "0s"):
            return True
    return False


def _name(relation: ast.RangeVar) -> str:
    return ".".join(p for p in (relation.schemaname, relation.relname) if p)


def _rules(stmt: ast.Node, new_tables: set[str]) -> Iterator[str]:
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
        yield "ban-drop-table"
    elif isinstance(stmt, ast.RenameStmt):
        if stmt.renameType == ObjectType.OBJECT_COLUMN:
            yield "renaming-column"
        elif stmt.renameType == ObjectType.OBJECT_TABLE:
            yield "renaming-table"
    elif isinstance(stmt, ast.IndexStmt):
        new = stmt.relation is not None and _name(stmt.relation) in new_tables
        if not stmt.concurrent and not new:
            yield "require-concurrent-index-creation"
    elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
        if _name(stmt.relation) in new_tables:
            return  # a table this migration creates is empty and unused
        for cmd in stmt.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd):
                yield from _alter_rules(cmd)


def _alter_rules(cmd: ast.AlterTableCmd) -> Iterator[str]:
    kind = AlterTableType(cmd.subtype or 0)
    if kind == AlterTableType.AT_DropColumn:
        yield "ban-drop-column"
    elif kind == AlterTableType.AT_AlterColumnType:
        yield "changing-column-type"
    elif kind == AlterTableType.AT_SetNotNull:
        yield "adding-not-nullable-field"
    elif kind == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        constraints = [c for c in cmd.def_.constraints or () if isinstance(c, ast.Constraint)]
        types = {ConstrType(c.contype or 0) for c in constraints}
        if ConstrType.CONSTR_NOTNULL in types and not types & _DEFAULTS:
            yield "adding-required-field"
        for c in constraints:
            yield from _constraint_rules(c, inline=True)
    elif kind == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        yield from _constraint_rules(cmd.def_, inline=False)


def _constraint_rules(c: ast.Constraint, *, inline: bool) -> Iterator[str]:
    # a constraint written in a column's definition cannot say NOT VALID
    not_valid = bool(c.skip_validation) and not inline
    if ConstrType(c.contype or 0) == ConstrType.CONSTR_FOREIGN and not not_valid:
        yield "adding-foreign-key-constraint"
    elif ConstrType(c.contype or 0) == ConstrType.CONSTR_CHECK and not not_valid:
        yield "constraint-missing-not-valid"
