"""The wheel, built here, installs with `uv tool` into a clean directory and runs; an
agent host's install (no `server` extra) holds none of the server's libraries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import conveyor
from conveyor.entry import SERVER_MODULES

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv")
AGENT_INSTALL_MAX_MB = 60  # 36 MB measured on 2026-12-05 (the server extra: 245 MB)

pytestmark = pytest.mark.skipif(UV is None, reason="uv is not installed")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def _size_mb(path: Path) -> float:
    seen: set[tuple[int, int]] = set()
    total = 0
    for file in path.rglob("*"):
        st = file.lstat()
        if file.is_file() and not file.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total / 1e6


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    assert UV is not None
    _run(UV, "build", "--wheel", "--out-dir", str(out), "--quiet", str(ROOT))
    (built,) = out.glob("conveyor-*.whl")
    return built


def test_an_agent_install_from_the_wheel_runs_and_has_no_server_libraries(
    wheel: Path, tmp_path: Path
) -> None:
    assert UV is not None
    tools, bin_dir = tmp_path / "tools", tmp_path / "bin"
    env = {
        "UV_TOOL_DIR": str(tools),
        "UV_TOOL_BIN_DIR": str(bin_dir),
        "VIRTUAL_ENV": "",  # the test's own venv must not be the one installed into
    }
    # the versions uv.lock pins (uv's cache holds them since `make sync`): `--offline`
    # would resolve against uv's cached index pages instead, which may be older than the
    # lock (it failed so once, on a clean clone)
    constraints = tmp_path / "constraints.txt"
    _run(
        UV,
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--no-hashes",
        "--quiet",
        "--project",
        str(ROOT),
        "-o",
        str(constraints),
    )
    _run(
        UV,
        "tool",
        "install",
        "-c",
        str(constraints),
        "--python",
        sys.executable,
        str(wheel),
        env=env,
    )
    version = _run(str(bin_dir / "conveyor"), "--version")
    assert version.stdout == f"conveyor {conveyor.__version__}\n"
    _run(str(bin_dir / "conveyor"), "agent", "--help")
    _run(str(bin_dir / "conveyor"), "runner", "--help")
    # a runner machine needs no more than an agent host: its modules import there
    python = next((tools / "conveyor").glob("bin/python3*"))
    _run(str(python), "-c", "import conveyor.runner.main")
    # the router's flags in C came with the wheel (hatch_build.py)
    _run(str(python), "-c", "from conveyor.flags.fastline import Line; assert Line is not None")

    (site,) = (tools / "conveyor").glob("lib/python3*/site-packages")
    installed = {p.name.lower() for p in site.iterdir()}
    for module in (*SERVER_MODULES, "starlette", "numpy", "psycopg"):
        assert module not in installed, f"{module} in an agent-only install"
    size = _size_mb(tools / "conveyor")
    print(f"agent-only install: {size:.1f} MB in {tools / 'conveyor'}")
    assert size < AGENT_INSTALL_MAX_MB

    refused = subprocess.run(
        [str(bin_dir / "conveyor"), "server"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "install the server with" in " ".join(refused.stdout.split() + refused.stderr.split())


def test_without_a_c_compiler_the_wheel_is_built_in_pure_python(
    tmp_path: Path,
) -> None:
    assert UV is not None
    out = tmp_path / "dist"
    done = _run(
        UV,
        "build",
        "--wheel",
        "--out-dir",
        str(out),
        str(ROOT),
        env={"LDSHARED": str(tmp_path / "no-compiler")},
    )
    assert "the router's flags in C were not built" in done.stderr
    (built,) = out.glob("conveyor-*.whl")
    assert built.name.endswith("-py3-none-any.whl")  # pure Python, for any platform
    with zipfile.ZipFile(built) as wheel:
        assert not [n for n in wheel.namelist() if n.endswith((".so", ".pyd"))]
