"""The expand-phase lint of SQLite and MySQL migrations, on sqlglot's parser.

The PostgreSQL-only rules (CONCURRENTLY, NOT VALID, lock_timeout) have no counterpart
there; the others hold: no dropping or renaming, no type change, no NOT NULL column
without a default. A statement's waivers are the comments sqlglot attaches to its
tokens: those before it, inside it, and after its semicolon.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from conveyor.sqllint.findings import Finding, LintResult, Unparseable, shorten, waivers_in

_DIALECTS = {"sqlite": "sqlite", "mysql": "mysql"}


def lint_other(sql: str, file: str, dialect: str) -> LintResult:
    read = _DIALECTS[dialect]
    try:
        tokens = Dialect.get_or_raise(read).tokenize(sql)
    except TokenError as exc:
        return LintResult([], [Unparseable(file, 1, str(exc))], 0)
    findings: list[Finding] = []
    errors: list[Unparseable] = []
    count = 0
    new_tables: set[str] = set()
    for chunk in _statements(tokens):
        count += 1
        line = chunk[0].line
        text = sql[chunk[0].start : _last(chunk).end + 1]
        try:
            tree = _parse(text, read)
        except ParseError as exc:
            first = exc.errors[0] if exc.errors else {}
            where = line + int(first.get("line") or 1) - 1
            errors.append(Unparseable(file, where, str(first.get("description") or exc)))
            continue
        if isinstance(tree, exp.Command):
            errors.append(Unparseable(file, line, f"sqlglot ({read}) does not know this statement"))
            continue
        if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "TABLE":
            table = tree.find(exp.Table)
            if table is not None:
                new_tables.add(table.name)
        waivers = [w for t in chunk for c in t.comments for w in waivers_in(c)]
        for rule in _rules(tree, new_tables):
            reason = next((w.reason for w in waivers if rule in w.rules), None)
            findings.append(Finding(file, line, rule, shorten(text), reason))
    return LintResult(findings, errors, count)


def _statements(tokens: list[Token]) -> Iterator[list[Token]]:
    """The tokens of each statement, its semicolon last (if it has one)."""
    chunk: list[Token] = []
    for token in tokens:
        chunk.append(token)
        if token.token_type == TokenType.SEMICOLON:
            if len(chunk) > 1:
                yield chunk
            chunk = []
    if chunk:
        yield chunk


def _last(chunk: list[Token]) -> Token:
    ends = chunk[-1].token_type == TokenType.SEMICOLON and len(chunk) > 1
    return chunk[-2] if ends else chunk[-1]


def _parse(text: str, read: str) -> exp.Expr | None:
    # sqlglot logs (as a warning) each statement it falls back to reading as a Command
    quiet = logging.getLogger("sqlglot")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return sqlglot.parse_one(text, read=read)
    finally:
        quiet.setLevel(level)


def _rules(tree: exp.Expr | None, new_tables: set[str]) -> Iterator[str]:
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "TABLE":
        yield "ban-drop-table"
    if not isinstance(tree, exp.Alter):
        return
    table = tree.this.name if isinstance(tree.this, exp.Table) else ""
    for action in tree.args.get("actions") or ():
        if isinstance(action, exp.Drop) and str(action.args.get("kind", "")).upper() == "COLUMN":
            yield "ban-drop-column"
        elif isinstance(action, exp.RenameColumn):
            yield "renaming-column"
        elif isinstance(action, exp.AlterRename):
            yield "renaming-table"
        elif isinstance(action, exp.ModifyColumn):
            yield "renaming-column" if action.args.get("rename_from") else "changing-column-type"
        elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
            yield "changing-column-type"
        elif isinstance(action, exp.ColumnDef) and table not in new_tables:
            kinds = [c.args.get("kind") for c in action.args.get("constraints") or ()]
            not_null = any(
                isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")
                for k in kinds
            )
            if not_null and not any(isinstance(k, exp.DefaultColumnConstraint) for k in kinds):
                yield "adding-required-field"
