"""Running an instance as `service.user`, within `service.limits`.

When systemd runs the host (PID 1), each instance is a transient scope
(`systemd-run --scope`): MemoryMax, CPUQuota and the user are systemd's, and the
scope is its own cgroup, so restarting the agent's unit leaves it running. Otherwise
`conveyor.agent.execas` is put before the command: it sets RLIMIT_NOFILE, joins a
cgroup v2 group holding memory.max and cpu.max when the agent can write one (else memory
is RLIMIT_AS and CPU is not limited, which the agent logs), switches to the user, then
executes the command in the same process, so the supervisor's pid is the instance's.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor.agent.errors import StartError
from conveyor.protocol import InstanceLimits

log = logging.getLogger("conveyor.agent.supervisor")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_GROUP = "conveyor"  # instances' groups live under /sys/fs/cgroup/conveyor/
SWEEP_AFTER = 60.0  # seconds: an empty instance group older than this is removed
CPU_PERIOD = 100_000  # microseconds, cgroup v2's default cpu.max period


@dataclass(frozen=True)
class RunAs:
    """The user an instance runs as, resolved on this host."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self) -> dict[str, str]:
        return {"USER": self.name, "LOGNAME": self.name, "HOME": self.home}


def resolve_user(name: str) -> RunAs:
    """The user `service.user` names on this host, or a StartError saying what to do."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartError(
            f"service.user {name!r} does not exist on this host: create it "
            f"(`useradd --system --no-create-home --shell /usr/sbin/nologin {name}`) or change "
            "service.user in conveyor.yml"
        ) from None
    if entry.pw_uid == 0:
        raise StartError(f"service.user {name!r} is root (uid 0): name an unprivileged user")
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise StartError(
            f"service.user {name!r}: the agent runs as uid {os.geteuid()}, not root, so it "
            "cannot start instances as another user; run the agent as root (its unit does)"
        )
    groups = sorted({entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem})
    return RunAs(name, entry.pw_uid, entry.pw_gid, tuple(groups), entry.pw_dir)


def can_enter(path: Path, user: RunAs) -> Path | None:
    """The first directory on the way to `path` that `user` may not enter (None: it may):
    a release under a 0700 data directory cannot be started as another user."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            return directory
        if st.st_uid == user.uid:
            bit = 0o100
        elif st.st_gid in user.groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return directory
    return None


def check_release_dir(path: Path, user: RunAs) -> None:
    """Raise a StartError saying what to change when `user` cannot reach `path`."""
    blocked = can_enter(path, user)
    if blocked is not None:
        mode = oct(blocked.stat().st_mode & 0o777) if blocked.exists() else "missing"
        raise StartError(
            f"service.user {user.name!r} cannot enter {blocked} (mode {mode}) to start the "
            f"instance in {path}: let it through (chmod o+x {blocked}), e.g. keep the agent's "
            "data directory 0755"
        )


def systemd_runs_host() -> bool:
    """Whether systemd is PID 1 (sd_booted's test) and systemd-run is installed."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") is not None


def is_confined(user: RunAs | None, limits: InstanceLimits) -> bool:
    return user is not None or any(v is not None for v in limits.model_dump().values())


def systemd_argv(
    command: list[str], unit: str, user: RunAs | None, limits: InstanceLimits
) -> list[str]:
    """`command` in a transient scope with the limits as its properties (pure)."""
    argv = ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={unit}"]
    if limits.memory is not None:
        argv.append(f"--property=MemoryMax={limits.memory}")
    if limits.cpu is not None:
        argv.append(f"--property=CPUQuota={round(limits.cpu * 100)}%")
    if user is not None:
        argv += [f"--uid={user.uid}", f"--gid={user.gid}"]
    argv += ["--", *command]
    if limits.files is not None:
        # a scope has no LimitNOFILE: the limit is set before systemd-run, which keeps it
        return wrapper_argv(argv, None, InstanceLimits(files=limits.files), None)
    return argv


def wrapper_argv(
    command: list[str], user: RunAs | None, limits: InstanceLimits, cgroup: Path | None
) -> list[str]:
    """`command` behind conveyor.agent.execas, which confines then executes it (pure).

    With a cgroup the memory limit is its memory.max; without, RLIMIT_AS."""
    argv = [sys.executable, "-I", "-m", "conveyor.agent.execas"]
    if limits.files is not None:
        argv += ["--files", str(limits.files)]
    if limits.memory is not None and cgroup is None:
        argv += ["--memory", str(limits.memory)]
    if cgroup is not None:
        argv += ["--cgroup", str(cgroup)]
    if user is not None:
        argv += ["--uid", str(user.uid), "--gid", str(user.gid)]
        argv += ["--groups", ",".join(str(g) for g in user.groups)]
    return [*argv, "--", *command]


def cgroup_for(instance: str, limits: InstanceLimits, root: Path = CGROUP_ROOT) -> Path | None:
    """A cgroup v2 group for one instance with its memory.max and cpu.max, or None when
    no limit needs one or the agent cannot make one (no cgroup v2, not writable)."""
    if limits.memory is None and limits.cpu is None:
        return None
    if not (root / "cgroup.controllers").exists():
        return None
    parent = root / CGROUP_GROUP
    try:
        parent.mkdir(exist_ok=True)
        for level in (root, parent):
            (level / "cgroup.subtree_control").write_text("+memory +cpu")
        for old in parent.iterdir():
            # groups of instances gone (rmdir refuses busy ones); a group made a moment ago
            # may still wait for its process to join it
            with contextlib.suppress(OSError):
                if old.is_dir() and time.time() - old.stat().st_mtime > SWEEP_AFTER:
                    old.rmdir()
        group = parent / instance
        group.mkdir(exist_ok=True)
        if limits.memory is not None:
            (group / "memory.max").write_text(str(limits.memory))
        if limits.cpu is not None:
            (group / "cpu.max").write_text(f"{round(limits.cpu * CPU_PERIOD)} {CPU_PERIOD}")
    except OSError as exc:
        log.warning("cannot make a cgroup v2 group for an instance", extra={"error": str(exc)})
        return None
    return group


def launch_argv(
    command: list[str], *, unit: str, instance: str, user: RunAs | None, limits: InstanceLimits
) -> list[str]:
    """The argv that starts `command` as `user` within `limits` on this host."""
    if not is_confined(user, limits):
        return command
    if systemd_runs_host():
        return systemd_argv(command, unit, user, limits)
    cgroup = cgroup_for(instance, limits)
    if cgroup is None and limits.cpu is not None:
        log.warning(
            "service.limits.cpu is not enforced on this host: systemd does not run it and "
            "the agent cannot write a cgroup v2 group",
            extra={"unit": unit},
        )
    return wrapper_argv(command, user, limits, cgroup)
