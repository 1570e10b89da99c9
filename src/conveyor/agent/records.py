"""The agent's durable record of what runs where: `<data>/agent-state.json`.

Written whole, atomically (temp file, fsync, rename, fsync of the directory), so a
kill -9 or a power cut at any moment leaves either the old record or the new one.
Sections this module does not know (the agent loop may add its own) are kept as
they are on every write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.protocol import InstanceLimits
from conveyor.sealing import InvalidToken, KeyFileError, Sealer

STATE_FILE = "agent-state.json"
KEY_FILE = "agent.key"
FORMAT_VERSION = 1

log = logging.getLogger("conveyor.agent.records")

InstanceState = Literal["starting", "running", "backoff", "stopping", "stopped"]


class Record(BaseModel):
    # a newer agent may add fields; an older one must not choke on them
    model_config = ConfigDict(extra="ignore")


class InstanceRecord(Record):
    """One instance as the supervisor last knew it."""

    id: str = Field(description="random; also in the process's CONVEYOR_INSTANCE variable")
    app: str
    release: str
    release_dir: str
    command: str
    port: int
    pid: int
    pgid: int
    proc_start: int = Field(description="start time in /proc/<pid>/stat (clock ticks after boot)")
    started_at: float = Field(description="unix time this process was started")
    first_started_at: float = Field(description="unix time the instance was first started")
    state: InstanceState
    restarts: int = 0
    log_path: str
    env: dict[str, str] = Field(
        default_factory=dict,
        description="service env and secrets, to restart it after a crash (sealed in the file)",
    )
    user: str | None = Field(default=None, description="service.user it runs as")
    limits: InstanceLimits = Field(default_factory=InstanceLimits)


class ReleaseRecord(Record):
    """One release unpacked on this host."""

    installed_at: float
    sha256: str


class AgentState(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: int = FORMAT_VERSION
    updated_at: float = 0.0
    instances: list[InstanceRecord] = []
    releases: dict[str, dict[str, ReleaseRecord]] = Field(
        default_factory=dict, description="app -> release -> record"
    )


_sealers: dict[Path, Sealer] = {}
_sealers_guard = threading.Lock()


def agent_sealer(data_dir: Path) -> Sealer:
    """The sealer over `<data>/agent.key` (made 0600 on first use), one per process."""
    path = (data_dir / KEY_FILE).absolute()
    with _sealers_guard:
        if path not in _sealers:
            _sealers[path] = Sealer.open_or_create(path)
        return _sealers[path]


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace path with data so that readers see the old or the new bytes, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in the directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateFile:
    """Read-modify-write access to the record, one writer at a time (threads and processes).

    The env of each instance (its service env and secrets) is sealed in the file with
    the agent's own key file, `<data>/agent.key` (0600, made at the first write):
    kept, rather than held in memory only, so that an agent started after a kill -9
    or a reboot restarts a crashed instance before it reaches the server again.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self.key_path = data_dir / KEY_FILE
        self._lock = _lock_for(self.path.absolute())
        self._sealer: Sealer | None = None

    def _sealing(self) -> Sealer:
        if self._sealer is None:
            self._sealer = agent_sealer(self.key_path.parent)
        return self._sealer

    def _open_envs(self, data: object) -> object:
        """Open each instance's `env_sealed` into `env` (an unopenable one is logged, empty)."""
        if not isinstance(data, dict):
            return data
        for item in data.get("instances") or []:
            if not isinstance(item, dict) or "env_sealed" not in item:
                continue
            sealed = item.pop("env_sealed")
            try:
                item["env"] = json.loads(self._sealing().open(sealed))
            except (KeyFileError, InvalidToken, ValueError, TypeError) as exc:
                item["env"] = {}
                log.error(
                    "the env of an instance cannot be opened with the agent's key file; "
                    "it restarts with the env the server sends next",
                    extra={
                        "instance": item.get("id"),
                        "key_file": str(self.key_path),
                        "error": exc.__class__.__name__,
                    },
                )
        return data

    def _seal_envs(self, data: dict[str, object]) -> dict[str, object]:
        instances = data.get("instances")
        if isinstance(instances, list):
            for item in instances:
                env = item.pop("env", None)
                item["env_sealed"] = self._sealing().seal(json.dumps(env or {}))
        return data

    def load(self) -> AgentState:
        """The current record; an unreadable one is set aside (and logged), not fatal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return AgentState()
        try:
            return AgentState.model_validate(self._open_envs(json.loads(raw)))
        except (ValueError, ValidationError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error(
                "agent record is unreadable; set aside, starting from an empty record",
                extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)},
            )
            return AgentState()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield

    def update(self, change: Callable[[AgentState], None]) -> AgentState:
        """Apply change to a fresh copy of the record and write it back atomically."""
        with self._locked():
            state = self.load()
            change(state)
            state.version = FORMAT_VERSION
            state.updated_at = time.time()
            data = self._seal_envs(state.model_dump(mode="json"))
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
            atomic_write(self.path, text.encode("utf-8"))
            return state
