"""Running one step as a subprocess: own process group, timeout, log streamed as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.pipeline.masking import Masker

SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
KILL_GRACE = 5.0
STEP_MARKER = "CONVEYOR_STEP_ID"


@dataclass(frozen=True)
class StepResult:
    exit_code: int | None
    timed_out: bool
    cancelled: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


async def run_step(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    masker: Masker,
    timeout: float | None,
    on_start: Callable[[int], Awaitable[None]] | None = None,
    cancel: asyncio.Event | None = None,
) -> StepResult:
    """Run argv in its own session; append its masked output to log_path line by line."""
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                limit=1 << 20,
            )
        except OSError as exc:
            log.write(masker(f"conveyor: cannot start {argv[0]!r}: {exc}\n"))
            return StepResult(127, False, False, time.monotonic() - started)
        if on_start is not None:
            await on_start(proc.pid)
        assert proc.stdout is not None
        pump = asyncio.create_task(_pump(proc.stdout, log, masker))
        waiter = asyncio.create_task(proc.wait())
        watchers: set[asyncio.Task[object]] = {waiter}
        cancel_task = asyncio.create_task(cancel.wait()) if cancel is not None else None
        if cancel_task is not None:
            watchers.add(cancel_task)
        done, _ = await asyncio.wait(watchers, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        timed_out = not done
        cancelled = cancel_task is not None and cancel_task in done and waiter not in done
        if timed_out or cancelled:
            why = f"timed out after {format_duration(timeout or 0)}" if timed_out else "cancelled"
            log.write(f"conveyor: step {why}; stopping its processes\n")
            await kill_group(proc.pid, waiter)
        if cancel_task is not None:
            cancel_task.cancel()
        exit_code = await waiter
        # the group may keep the pipe open (a daemonised grandchild): don't wait forever
        try:
            await asyncio.wait_for(pump, timeout=KILL_GRACE)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            pump.cancel()
        return StepResult(
            None if (timed_out or cancelled) else exit_code,
            timed_out,
            cancelled,
            time.monotonic() - started,
        )


async def _pump(stream: asyncio.StreamReader, log: object, masker: Masker) -> None:
    write = log.write  # type: ignore[attr-defined]
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the limit: take what is there
            line = await stream.read(1 << 20)
        if not line:
            return
        text = line.decode("utf-8", errors="replace")
        if not text.endswith("\n"):
            text += "\n"
        write(masker(text))


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def kill_group(pgid: int, waiter: asyncio.Task[int] | None = None) -> None:
    """SIGTERM the step's process group, then SIGKILL it after a grace period."""
    signal_group(pgid, signal.SIGTERM)
    if waiter is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout=KILL_GRACE)
    else:
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline and _group_alive(pgid):
            await asyncio.sleep(0.1)
    signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def step_marker(data_dir: Path, step_id: int) -> str:
    """The value of CONVEYOR_STEP_ID for a step: unique per server data directory,
    so that two servers on one machine never take each other's processes for theirs."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return f"{key}-{step_id}"


def find_step_processes(markers: set[str]) -> list[int]:
    """Pids of processes left behind by the given steps (found by the marker in their env).

    A server killed with SIGKILL leaves its step processes running; they carry
    CONVEYOR_STEP_ID in their environment, so a restarted server can find and
    stop them even when it died before recording their pid.
    """
    wanted = {f"{STEP_MARKER}={m}".encode() for m in markers}
    return processes_whose_env(lambda env: bool(wanted.intersection(env)))


def processes_whose_env(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of the processes whose environment (/proc/PID/environ's items) `match`es."""
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if match(env):
            found.append(int(entry.name))
    return found


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def lint_command() -> str:
    """The migrations lint as `conveyor migrations lint` runs it on a laptop, from this
    process's own install (a server's, or a runner's)."""
    return f"{shlex.quote(sys.executable)} -m conveyor migrations lint"


def step_outcome(result: StepResult, kind: str, name: str, timeout: float) -> tuple[str, str]:
    """The state and reason of a step (and its run) that did not succeed."""
    if result.cancelled:
        return "cancelled", f"{kind} step '{name}' aborted"
    if kind == "lint" and result.exit_code == 1:
        return "failed", "migrations lint: findings, or SQL that does not parse (see its log)"
    if result.timed_out:
        return "failed", f"{kind} step '{name}' timed out after {format_duration(timeout)}"
    return "failed", f"{kind} step '{name}' failed (exit {result.exit_code})"
