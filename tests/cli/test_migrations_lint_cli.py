"""`conveyor migrations lint` on a laptop: files, a command, or conveyor.yml's migrations.sql."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor import entry

DROP = "ALTER TABLE users DROP COLUMN name;\n"
ADD = "ALTER TABLE users ADD COLUMN full_name text;\n"


def lint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(entry.app, ["migrations", "lint", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("yml", "args", "code", "said"),
    [
        (None, ["drop.sql"], 1, "drop.sql:1: ban-drop-column"),
        (None, ["*.sql"], 1, "drop.sql:1: ban-drop-column"),
        (None, ["add.sql"], 0, "1 statements, 0 findings"),
        (None, ["--command", "cat drop.sql add.sql"], 1, "`cat drop.sql add.sql`:1: ban-drop"),
        ("migrations:\n  sql: [add.sql, drop.sql]\n", [], 1, "drop.sql:1: ban-drop-column"),
        ("migrations:\n  sql: cat add.sql\n", [], 0, "0 findings"),
        # conveyor.yml's session lock_timeout turned off: every locking statement is a finding
        ("migrations:\n  sql: cat add.sql\n  lock_timeout: 0\n", [], 1, "require-lock-timeout"),
        ("migrations:\n  sql: {files: [drop.sql], dialect: sqlite}\n", [], 1, "ban-drop-column"),
        (None, [], 2, "no SQL to lint"),
        (None, ["missing.sql"], 2, "missing.sql: no such file"),
        (None, ["--command", "exit 4"], 2, "failed (exit 4)"),
        (None, ["--dialect", "oracle", "add.sql"], 2, "expected one of postgres, sqlite, mysql"),
        ("app: [\n", ["add.sql"], 2, "conveyor.yml"),
    ],
)
def test_lint_locally(
    yml: str | None,
    args: list[str],
    code: int,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "drop.sql").write_text(DROP)
    (tmp_path / "add.sql").write_text(ADD)
    if yml is not None:
        (tmp_path / "conveyor.yml").write_text(
            yml if yml.startswith("app") else "app: shop\n" + yml
        )
    exit_code, output = lint(tmp_path, monkeypatch, *args)
    if args == ["add.sql"] and yml is None:  # the same file, by its absolute path
        assert lint(tmp_path, monkeypatch, str(tmp_path / "add.sql"))[0] == 0
    assert exit_code == code, output
    assert said in " ".join(output.split()), output


def test_without_the_server_extra_it_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "conveyor.sqllint", None)  # as if pglast were absent
    (tmp_path / "add.sql").write_text(ADD)
    exit_code, output = lint(tmp_path, monkeypatch, "add.sql")
    assert exit_code == 2
    assert "pip install 'conveyor[server]'" in " ".join(output.split())
