"""An instance as the supervisor sees it, and the policy for restarting it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.agent.records import InstanceRecord, InstanceState
from conveyor.protocol import InstanceLimits

__all__ = ["AdoptResult", "Backoff", "Instance", "describe_exit", "exit_text"]


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts of a crashing instance: initial, x factor, up to cap."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0  # up this long without crashing: the next crash starts over

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows `failures` consecutive crashes (0-based)."""
        return float(min(self.cap, self.initial * self.factor ** max(failures, 0)))


@dataclass(eq=False)
class Instance:
    """One running process of a release, on an internal port. Read it; don't change it."""

    id: str
    app: str
    release: str
    release_dir: Path
    command: str
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)
    user: str | None = None  # service.user; None: the agent's own
    limits: InstanceLimits = field(default_factory=InstanceLimits)
    pid: int = 0
    pgid: int = 0
    proc_start: int = 0
    started_at: float = 0.0
    first_started_at: float = 0.0
    state: InstanceState = "starting"
    restarts: int = 0
    adopted: bool = False
    last_exit: int | None = None  # exit code of the last crash; negative: killed by signal
    last_error: str | None = None  # what the last crash or failed restart looked like
    next_restart_at: float | None = None  # monotonic time of the pending restart
    crash_streak: int = field(default=0, repr=False)  # crashes in a row, for the backoff
    up_since: float = field(default=0.0, repr=False)  # monotonic time of the last (re)start

    @property
    def name(self) -> str:
        return f"{self.app}/{self.release}@{self.port}"

    def record(self) -> InstanceRecord:
        return InstanceRecord(
            id=self.id,
            app=self.app,
            release=self.release,
            release_dir=str(self.release_dir),
            command=self.command,
            port=self.port,
            pid=self.pid,
            pgid=self.pgid,
            proc_start=self.proc_start,
            started_at=self.started_at,
            first_started_at=self.first_started_at,
            state=self.state,
            restarts=self.restarts,
            log_path=str(self.log_path),
            env=self.env,
            user=self.user,
            limits=self.limits,
        )

    @classmethod
    def from_record(cls, rec: InstanceRecord) -> Instance:
        return cls(
            id=rec.id,
            app=rec.app,
            release=rec.release,
            release_dir=Path(rec.release_dir),
            command=rec.command,
            port=rec.port,
            log_path=Path(rec.log_path),
            env=dict(rec.env),
            user=rec.user,
            limits=rec.limits,
            pid=rec.pid,
            pgid=rec.pgid,
            proc_start=rec.proc_start,
            started_at=rec.started_at,
            first_started_at=rec.first_started_at,
            state=rec.state,
            restarts=rec.restarts,
            adopted=True,
        )


@dataclass
class AdoptResult:
    """What `adopt()` found in the record; iterating it gives the adopted instances."""

    adopted: list[Instance]
    dead: list[InstanceRecord]  # recorded but gone (or pid reused): the caller restarts them
    orphans: list[int]  # pids of instances missing from the record, which were stopped

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.adopted)

    def __len__(self) -> int:
        return len(self.adopted)


def exit_text(code: int | None) -> str:
    if code is None:
        return "exit code unknown: it was started by a previous agent"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def describe_exit(inst: Instance, code: int | None) -> str:
    return f"{inst.name} (pid {inst.pid}) exited: {exit_text(code)}"
