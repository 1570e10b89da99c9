"""`conveyor service install server|agent`: the units it writes, checked by systemd's
own `systemd-analyze verify` (systemd does not run this machine: nothing is started)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.entry import app
from conveyor.systemd.units import quote, state_directory

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def install(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["service", "install", *args, "--exec", CONVEYOR])
    return result.exit_code, result.output


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def verify(unit: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # it exits 0 on a line it cannot parse, but says so: silence is the only pass
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_the_agent_unit_keeps_instances_running_and_reads_the_token_from_a_file(
    tmp_path: Path,
) -> None:
    code, said = install(
        "agent",
        "--server", "https://conveyor.example.com",
        "--name", "web-1",
        "--token-file", "/etc/conveyor/agent.token",
        "--metrics", "127.0.0.1:9101",
        "--unit-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, said
    unit = tmp_path / "conveyor-agent.service"
    assert f"wrote {unit}" in said and "systemctl daemon-reload" in said
    lines = unit_lines(unit.read_text())
    assert (
        f"ExecStart={CONVEYOR} agent --server https://conveyor.example.com --name web-1 "
        "--data /var/lib/conveyor-agent --router embedded --bind 0.0.0.0 "
        "--metrics 127.0.0.1:9101 --token-file /etc/conveyor/agent.token"
    ) in lines
    for line in (
        "KillMode=process",
        "Restart=on-failure",
        "RestartPreventExitStatus=3",
        "EnvironmentFile=-/etc/conveyor/agent.env",
        "StateDirectory=conveyor-agent",
    ):
        assert line in lines
    assert not any(line.startswith("User=") for line in lines)  # root: it switches users
    verify(unit)


def test_the_server_unit_runs_as_its_own_user(tmp_path: Path) -> None:
    code, said = install(
        "server", "--url", "https://ci.example.com/conveyor", "--unit-dir", str(tmp_path)
    )
    assert code == 0, said
    unit = tmp_path / "conveyor-server.service"
    lines = unit_lines(unit.read_text())
    assert (
        f"ExecStart={CONVEYOR} server --data /var/lib/conveyor --listen 0.0.0.0:8420 "
        "--url https://ci.example.com/conveyor"
    ) in lines
    for line in ("User=conveyor", "UMask=0077", "Restart=on-failure", "StateDirectoryMode=0700"):
        assert line in lines
    verify(unit)


def test_print_only_prints(tmp_path: Path) -> None:
    code, said = install(
        "agent", "--server", "http://s:8420", "--print", "--unit-dir", str(tmp_path)
    )
    assert code == 0
    assert said.startswith("# written by `conveyor service install agent`")
    assert "KillMode=process" in said
    assert list(tmp_path.iterdir()) == []


def test_a_server_as_root_is_refused() -> None:
    code, said = install("server", "--user", "root", "--print")
    assert code == 2
    assert "--user root" in said


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("/usr/bin/conveyor", "/usr/bin/conveyor"),
        ("https://x/a%20b", "https://x/a%%20b"),
        ("two words", '"two words"'),
        ('say "hi" $HOME', '"say \\"hi\\" $$HOME"'),
    ],
)
def test_quote(arg: str, word: str) -> None:
    assert quote(arg) == word


@pytest.mark.parametrize(
    ("data", "state"),
    [("/var/lib/conveyor", "conveyor"), ("/srv/conveyor", None), ("/var/lib", None)],
)
def test_state_directory(data: str, state: str | None) -> None:
    assert state_directory(Path(data)) == state


@pytest.fixture
def root_owned_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="conveyor-units-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _system_python() -> str | None:
    """A Python that an unprivileged user may run, of this venv's version (the venv's own
    interpreter lives under /root here)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            done = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
            )
            if done.stdout.strip() == str(sys.version_info[:2]):
                return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as nobody")
def test_installing_a_unit_without_permission_says_so(root_owned_dir: Path) -> None:
    python = _system_python()
    if python is None:
        pytest.skip(f"no system Python {sys.version_info[:2]} for user nobody")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    # nobody imports conveyor from this checkout and its venv: a clone under a 0700 directory
    # (`mktemp -d`) cannot be read by another user, which is not what this test is about
    closed = [d for d in (ROOT, *ROOT.parents, Path(site)) if not d.stat().st_mode & 0o005]
    if closed:
        pytest.skip(f"user nobody cannot read the checkout here: {closed[0]} is not o+rx")
    command = ["service", "install", "agent", "--server", "http://s:8420"]
    done = subprocess.run(
        [python, "-m", "conveyor", *command, "--unit-dir", str(root_owned_dir), "--exec", CONVEYOR],
        capture_output=True,
        text=True,
        timeout=60,
        user="nobody",
        cwd="/",
        env={"PYTHONPATH": f"{ROOT / 'src'}:{site}", "PATH": os.environ["PATH"], "HOME": "/"},
    )
    said = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot write {root_owned_dir}/conveyor-agent.service: permission denied" in said
    assert "Run it as root" in said and "--print" in said
    assert list(root_owned_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the venv is under /root here)")
def test_a_server_user_that_cannot_run_the_command_is_warned_of(tmp_path: Path) -> None:
    from conveyor.agent.confine import RunAs, can_enter

    nobody = RunAs("nobody", 65534, 65534, (65534,), "/")
    if can_enter(Path(sys.executable).resolve().parent, nobody) is None:
        pytest.skip("this venv's Python is within reach of nobody")
    code, said = install("server", "--user", "nobody", "--unit-dir", str(tmp_path))
    assert code == 0, said
    words = " ".join(said.split())
    assert "# warning: nobody cannot run" in words
    assert "pipx install --global" in words
