"""The processes this Python process spawned, so whichever Supervisor watches them reaps them.

Kept per process rather than per Supervisor: a new Supervisor object (an agent
"restarted" in the same process, as in tests) must still reap the old one's children,
and a child dropped while running would leave a zombie and a ResourceWarning.
"""

from __future__ import annotations

import contextlib
import subprocess

from conveyor.agent import procfs

_children: dict[int, subprocess.Popen[bytes]] = {}


def add(proc: subprocess.Popen[bytes]) -> None:
    _children[proc.pid] = proc


def pids() -> list[int]:
    return list(_children)


def forget(pid: int) -> None:
    """Drop a reaped child (one still running stays: dropping it would leak a zombie)."""
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]


def reap(pid: int, timeout: float = 2.0) -> None:
    """Wait (briefly, blocking) for a child just sent SIGKILL, so no zombie is left."""
    proc = _children.get(pid)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        forget(pid)


def exited(pid: int, proc_start: int) -> tuple[bool, int | None]:
    """Whether a process ended, with its exit code if it is our child (else None).

    Our children are polled (which reaps them); another's (an instance adopted from a
    previous agent) are looked up in /proc, where a zombie or a reused pid counts as ended.
    """
    proc = _children.get(pid)
    if proc is not None:
        code = proc.poll()
        return (code is not None, code)
    return (not procfs.is_running(pid, proc_start), None)
