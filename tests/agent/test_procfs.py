"""procfs.pids_under: the processes a demo, test or benchmark started under its directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conveyor.agent import procfs
from tests.helpers import wait_for


def test_processes_under_a_directory_by_command_line_or_working_directory(
    tmp_path: Path,
) -> None:
    inside = tmp_path / "data"
    inside.mkdir()
    by_cwd = subprocess.Popen(["sleep", "30"], cwd=inside)
    elsewhere = subprocess.Popen(["sleep", "30"], cwd=tmp_path)
    named = subprocess.Popen(["sh", "-c", f"sleep 30 # {inside}"])
    try:
        expected = {by_cwd.pid, named.pid}
        found = wait_for(lambda: expected <= set(procfs.pids_under(str(inside))) and expected)
        assert found == expected
        assert elsewhere.pid not in procfs.pids_under(str(inside))
    finally:
        for proc in (by_cwd, elsewhere, named):
            proc.kill()
            proc.wait()
    wait_for(lambda: not procfs.pids_under(str(inside)), timeout=10)
