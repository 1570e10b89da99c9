"""migrations.backup before migrations.contract, as the agent runs them (with bash)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.deploy.desired import contract_command


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("backup", "contract", "code", "ran", "says"),
    [
        (None, "echo contract >> ran", 0, "contract\n", ""),
        ("echo backup >> ran", "echo contract >> ran", 0, "backup\ncontract\n", ""),
        ("echo backup >> ran; exit 3", "echo contract >> ran", 3, "backup\n", "backup failed"),
        ("echo backup >> ran", "echo contract >> ran; exit 4", 4, "backup\ncontract\n", ""),
    ],
)
def test_the_backup_must_succeed_before_the_contract(
    tmp_path: Path, backup: str | None, contract: str, code: int, ran: str, says: str
) -> None:
    command = contract_command(contract, backup)
    assert command is not None
    done = run(command, tmp_path)
    assert done.returncode == code
    assert (tmp_path / "ran").read_text() == ran
    assert says in done.stderr
    if says:
        assert "the contract did not run" in done.stderr


def test_no_contract_no_command() -> None:
    assert contract_command(None, "./bin/backup") is None
