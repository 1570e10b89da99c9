"""`conveyor server` and `conveyor demo` on an agent host's install say what to install."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor import entry


@pytest.mark.parametrize("command", ["server", "demo"])
def test_without_the_server_extra_the_server_commands_say_what_to_install(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry, "SERVER_MODULES", ("fastapi", "conveyor_absent_module"))
    result = CliRunner().invoke(entry.app, [command])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert f"conveyor {command}: conveyor_absent_module not installed" in said
    assert "pip install 'conveyor[server]'" in said


def test_the_launchers_keep_their_place_in_the_help() -> None:
    names = [
        c.name or (c.callback.__name__ if c.callback else "") for c in entry.app.registered_commands
    ]
    assert names.index("server") == names.index("init") + 1
    assert names[names.index("hook-script") + 1 : names.index("hook-script") + 3] == [
        "agent",
        "router",
    ]
    assert names.index("demo") == names.index("history") + 1


def test_agent_token_file_errors_say_what_is_wrong(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    for path, expected in (
        (tmp_path / "absent.token", "cannot read it"),
        (empty, "the file is empty"),
    ):
        args = ["agent", "--server", "http://127.0.0.1:9", "--name", "h", "--data", str(tmp_path)]
        result = CliRunner().invoke(entry.app, [*args, "--token-file", str(path)])
        assert result.exit_code == 2
        # rich folds a long path at the terminal's width: compare without the blanks
        said = "".join(result.output.split())
        assert f"--token-file{path}" in said
        assert expected.replace(" ", "") in said
