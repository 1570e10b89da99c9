"""`make demo` runs `conveyor demo`: it must work from nothing but this repository."""

from __future__ import annotations

import os

import pytest

from tests.helpers import free_port, run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_the_sample_app_through_the_pipeline() -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = run_cli(
        "demo", "--no-wait", "--listen", f"127.0.0.1:{free_port()}", env=env, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unit tests" in done.stdout and "test_greeting" in done.stdout
    assert "succeeded: release" in done.stdout
    assert "serves on http://127.0.0.2:8000/" in done.stdout
