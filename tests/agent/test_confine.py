"""Instances run as `service.user` within `service.limits`: the argv that does it on a
host with systemd (pure), and for real on this one, which systemd does not run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.agent import procfs
from conveyor.agent.confine import RunAs, can_enter, cgroup_for, systemd_argv, wrapper_argv
from conveyor.agent.errors import InstallError, StartError
from conveyor.agent.installer import Installer
from conveyor.agent.supervisor import Supervisor
from conveyor.protocol import InstanceLimits
from tests.helpers import wait_for_async

NOBODY = RunAs("nobody", 65534, 65534, (65534,), "/nonexistent")
WRAPPER = [sys.executable, "-I", "-m", "conveyor.agent.execas"]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.mark.parametrize(
    ("user", "limits", "expected"),
    [
        (None, InstanceLimits(), ["--", "cmd"]),
        (
            NOBODY,
            InstanceLimits(memory=536870912, cpu=1.0),
            [
                "--property=MemoryMax=536870912",
                "--property=CPUQuota=100%",
                "--uid=65534",
                "--gid=65534",
                "--",
                "cmd",
            ],
        ),
        (None, InstanceLimits(cpu=0.25), ["--property=CPUQuota=25%", "--", "cmd"]),
    ],
)
def test_with_systemd_an_instance_is_a_transient_scope(
    user: RunAs | None, limits: InstanceLimits, expected: list[str]
) -> None:
    argv = systemd_argv(["cmd"], "conveyor-shop-ab12-0", user, limits)
    assert argv[:5] == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=conveyor-shop-ab12-0",
    ]
    assert argv[5:] == expected


def test_with_systemd_the_files_limit_is_set_before_systemd_run() -> None:
    argv = systemd_argv(["cmd"], "u", NOBODY, InstanceLimits(files=65536))
    assert argv[: len(WRAPPER) + 3] == [*WRAPPER, "--files", "65536", "--"]
    assert argv[len(WRAPPER) + 3] == "systemd-run"
    assert argv[-3:] == ["--gid=65534", "--", "cmd"]


@pytest.mark.parametrize(
    ("limits", "cgroup", "options"),
    [
        (InstanceLimits(files=1024), None, ["--files", "1024"]),
        (InstanceLimits(memory=1 << 30), None, ["--memory", str(1 << 30)]),
        # with a cgroup, memory is its memory.max, not RLIMIT_AS
        (InstanceLimits(memory=1 << 30, cpu=1), Path("/cg/x"), ["--cgroup", "/cg/x"]),
    ],
)
def test_without_systemd_the_wrapper_sets_the_limits(
    limits: InstanceLimits, cgroup: Path | None, options: list[str]
) -> None:
    assert wrapper_argv(["cmd"], None, limits, cgroup) == [*WRAPPER, *options, "--", "cmd"]


def test_without_systemd_the_wrapper_switches_user() -> None:
    argv = wrapper_argv(["cmd"], NOBODY, InstanceLimits(), None)
    assert argv == [*WRAPPER, "--uid", "65534", "--gid", "65534", "--groups", "65534", "--", "cmd"]


def test_no_cgroup_without_cgroup_v2(tmp_path: Path) -> None:
    assert cgroup_for("ab12", InstanceLimits(cpu=1), root=tmp_path) is None
    assert cgroup_for("ab12", InstanceLimits(files=10), root=tmp_path) is None


def test_a_cgroup_v2_group_gets_memory_max_and_cpu_max(tmp_path: Path) -> None:
    # a directory laid out as cgroup v2 is (the kernel's files are plain files here)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    group = cgroup_for("ab12", InstanceLimits(memory=1 << 29, cpu=0.5), root=tmp_path)
    assert group == tmp_path / "conveyor" / "ab12"
    assert (group / "memory.max").read_text() == str(1 << 29)
    assert (group / "cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +cpu"


@pytest.fixture
def release_dir() -> Iterator[Path]:
    """A release directory another user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-confine-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _limits(pid: int) -> dict[str, list[str]]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:].split() for row in rows}


def _became(pid: int, command: str) -> bool:
    """Whether the wrapper (python, as root) has executed the instance's command yet."""
    return Path(f"/proc/{pid}/comm").read_text().strip() == command


def _uids(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(line.split()[1:] for line in status if line.startswith("Uid:"))


@root_only
async def test_an_instance_runs_as_service_user_with_its_limits(
    data: Path, release_dir: Path
) -> None:
    sup = Supervisor(data, poll_interval=0.05, startup_window=0.3)
    try:
        inst = await sup.start(
            "shop",
            "r1",
            release_dir,
            'echo "as $(id -un) home=$HOME"; exec sleep 60',
            {},
            user="nobody",
            limits=InstanceLimits(files=4096, memory=1 << 30, cpu=1),
        )
        await wait_for_async(lambda: _became(inst.pid, "sleep"), timeout=20)
        assert _uids(inst.pid) == ["65534"] * 4
        limits = _limits(inst.pid)
        assert limits["Max open files"][:2] == ["4096", "4096"]
        assert limits["Max address space"][:2] == [str(1 << 30)] * 2
        assert procfs.environ(inst.pid)["USER"] == "nobody"
        await wait_for_async(lambda: "as nobody home=/nonexistent" in inst.log_path.read_text())
        # the record keeps user and limits, so a restart after a crash keeps them too
        (rec,) = sup.state.load().instances
        assert rec.user == "nobody" and rec.limits.files == 4096
    finally:
        await sup.stop_all(grace=2)
        await sup.close()


@root_only
async def test_a_crashed_instance_restarts_as_its_user(data: Path, release_dir: Path) -> None:
    sup = Supervisor(data, poll_interval=0.05, startup_window=0.3)
    try:
        inst = await sup.start(
            "shop",
            "r1",
            release_dir,
            "exec sleep 60",
            {},
            user="nobody",
            limits=InstanceLimits(files=2048),
        )
        first = inst.pid
        os.kill(first, signal.SIGKILL)
        await wait_for_async(lambda: inst.pid != first and sup.is_running(inst), timeout=20)
        await wait_for_async(lambda: _became(inst.pid, "sleep"), timeout=20)
        assert _uids(inst.pid)[0] == "65534"
        assert _limits(inst.pid)["Max open files"][:2] == ["2048", "2048"]
    finally:
        await sup.stop_all(grace=2)
        await sup.close()


async def test_an_unknown_service_user_is_a_clear_start_error(
    data: Path, release_dir: Path
) -> None:
    sup = Supervisor(data, poll_interval=0.05, startup_window=0.3)
    try:
        with pytest.raises(StartError) as refused:
            await sup.start(
                "shop", "r1", release_dir, "exec sleep 60", {}, user="no-such-user-here"
            )
        said = str(refused.value)
        assert "service.user 'no-such-user-here' does not exist on this host" in said
        assert "useradd --system" in said
        assert sup.instances() == []
    finally:
        await sup.close()


@root_only
async def test_a_release_the_user_cannot_reach_is_a_clear_start_error(data: Path) -> None:
    # pytest's tmp_path (under `data`) is 0700, owned by root
    release = data / "shop" / "releases" / "r1"
    release.mkdir(parents=True)
    sup = Supervisor(data, poll_interval=0.05, startup_window=0.3)
    try:
        with pytest.raises(StartError) as refused:
            await sup.start("shop", "r1", release, "exec sleep 60", {}, user="nobody")
        said = str(refused.value)
        assert "service.user 'nobody' cannot enter" in said
        assert "(mode 0o700)" in said and "chmod o+x" in said
    finally:
        await sup.close()


def test_can_enter(tmp_path: Path) -> None:
    me = RunAs("me", os.geteuid(), os.getegid(), (os.getegid(),), "/")
    other = RunAs("other", 65534, 65534, (65534,), "/")
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    blocked_first = tmp_path / "a"
    for directory in [tmp_path, *tmp_path.parents]:
        if directory.stat().st_mode & 0o001 == 0:
            blocked_first = directory  # pytest's own 0700 directories come first
    assert can_enter(inner, me) is None
    assert can_enter(inner, other) == blocked_first


@root_only
async def test_a_hook_with_a_user_runs_as_it(data: Path, release_dir: Path) -> None:
    installer = Installer(data)
    log = data / "migrate.log"
    done = await installer.exec_hook(
        'echo "as $(id -un) home=$HOME"', release_dir, {}, log, 30, name="migrate", user="nobody"
    )
    assert done.code == 0
    assert "as nobody home=/nonexistent" in log.read_text()
    with pytest.raises(InstallError) as refused:
        await installer.exec_hook("true", release_dir, {}, log, 30, user="no-such-user-here")
    assert "service.user 'no-such-user-here' does not exist" in str(refused.value)
