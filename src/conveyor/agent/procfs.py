"""What /proc says about a process: enough to tell a live instance from a reused pid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the supervisor relies on."""

    pid: int
    state: str  # R, S, D, Z, T, ...
    ppid: int
    pgrp: int
    session: int
    start_ticks: int  # clock ticks after boot: with the pid, names one process for ever


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None if there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except PermissionError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields start after the last ')'
    close = raw.rfind(")")
    if close < 0:
        return None
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state); starttime is field 22
    try:
        return ProcStat(
            pid=pid,
            state=fields[0],
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            start_ticks=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    stat = read_stat(pid)
    return None if stat is None else stat.start_ticks


def is_running(pid: int, expected_start: int | None = None) -> bool:
    """Whether pid names a live (not zombie) process, the same one if a start time is given."""
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X", "x"):
        return False
    return expected_start is None or stat.start_ticks == expected_start


def group_exists(pgid: int) -> bool:
    """Whether any process (zombies included) is still in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def environ(pid: int) -> dict[str, str]:
    """The environment a process was started with ({} if unreadable)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def pids() -> list[int]:
    """Every pid visible in /proc."""
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def group_members(pgid: int) -> list[ProcStat]:
    """The live (not zombie) processes of a process group, found by scanning /proc."""
    members: list[ProcStat] = []
    for pid in pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgrp == pgid and stat.state not in ("Z", "X", "x"):
            members.append(stat)
    return members


def pids_under(directory: str) -> list[int]:
    """Processes (not this one) whose command line mentions `directory`, or whose working
    directory is in it: what a demo, a test or a benchmark started under its data dir."""
    found = []
    for pid in pids():
        if pid == os.getpid():
            continue
        try:
            cmd = (PROC / str(pid) / "cmdline").read_bytes()
            cwd = os.readlink(PROC / str(pid) / "cwd")
        except OSError:
            continue
        if directory.encode() in cmd or cwd.startswith(directory):
            found.append(pid)
    return found
