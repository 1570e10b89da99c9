"""`conveyor --version` and shell completion, run as the installed command is."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor

BIN = Path(sys.executable).parent  # where the venv put the `conveyor` script


def conveyor_cmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "conveyor"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version_prints_the_package_version() -> None:
    done = conveyor_cmd("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"conveyor {conveyor.__version__}\n"
    # pyproject.toml names it too: the two must not drift apart
    assert importlib.metadata.version("conveyor") == conveyor.__version__


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o default -F _conveyor_completion conveyor"), ("zsh", "#compdef")],
)
def test_show_completion_for_a_named_shell(shell: str, marker: str) -> None:
    done = conveyor_cmd("--show-completion", shell)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    assert "_CONVEYOR_COMPLETE" in done.stdout


def test_bash_completes_commands_and_options_with_the_shown_script(tmp_path: Path) -> None:
    script = conveyor_cmd("--show-completion", "bash").stdout
    (tmp_path / "conveyor.sh").write_text(script)
    probe = f"""
source {tmp_path / "conveyor.sh"}
complete_words() {{
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
  _conveyor_completion conveyor
  printf '%s\\n' "${{COMPREPLY[@]}}"; echo ---
}}
complete_words conveyor se
complete_words conveyor agent --to
complete_words conveyor host ''
"""
    done = subprocess.run(
        ["bash", "--norc", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    commands, options, host = done.stdout.split("---\n")[:3]
    assert set(commands.split()) >= {"server", "secret", "service"}
    assert "--token" in options.split() and "--token-file" in options.split()
    assert {"add", "list"} <= set(host.split())


def test_install_completion_writes_the_script_where_bash_reads_it(tmp_path: Path) -> None:
    done = conveyor_cmd("--install-completion", "bash", env={"HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    installed = tmp_path / ".bash_completions" / "conveyor.sh"
    assert "_conveyor_completion" in installed.read_text()
    assert str(installed) in (tmp_path / ".bashrc").read_text()
