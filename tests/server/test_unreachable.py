"""A database that cannot be reached at start: a clear error naming it, exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_server_exits_1_when_its_postgresql_cannot_be_reached(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-postgresql-here"  # a socket directory without a socket
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "server",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            "127.0.0.1:9",
            "--db",
            f"postgresql://conveyor:hunter2@/conveyor?host={nowhere}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONVEYOR_ADMIN_TOKEN": "cvy_" + "a" * 40},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stderr.splitlines()[-1]
    assert said.startswith("conveyor server: cannot open the database postgresql"), said
    assert str(nowhere) in said and "--db" in said
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
