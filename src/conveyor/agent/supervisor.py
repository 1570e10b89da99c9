"""Running instances: start them on an internal port, restart them when they crash,
stop them gracefully, and re-attach to them after the agent itself restarted.

An instance is `bash -c <service.start>` in its release directory, in a session of
its own, writing to a log file rather than to a pipe: nothing ties it to the agent,
so an agent that is upgraded, restarted or kill -9'd leaves it serving. What runs
where is kept in `<data>/agent-state.json` (see records.py); a new agent reads it
and adopts the instances still alive, telling them from a reused pid by their start
time in /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from conveyor.agent import children, procfs
from conveyor.agent.confine import check_release_dir, launch_argv, resolve_user
from conveyor.agent.errors import StartError
from conveyor.agent.instance import AdoptResult, Backoff, Instance, describe_exit, exit_text
from conveyor.agent.ports import LOOPBACK, PORT_RANGE, port_is_free
from conveyor.agent.records import AgentState, InstanceRecord, StateFile
from conveyor.agent.spawn import indent, log_tail, process_env
from conveyor.protocol import InstanceLimits

__all__ = [
    "PORT_RANGE",
    "AdoptResult",
    "Backoff",
    "Instance",
    "StartError",
    "Supervisor",
    "port_is_free",
]

log = logging.getLogger("conveyor.agent.supervisor")

STARTUP_WINDOW = 0.5
POLL_INTERVAL = 0.25
KILL_WAIT = 5.0
INSTANCE_VAR = "CONVEYOR_INSTANCE"
DATA_VAR = "CONVEYOR_AGENT_DATA"


class Supervisor:
    """Starts, watches, restarts, stops and adopts the instances of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        backoff: Backoff | None = None,
        startup_window: float = STARTUP_WINDOW,
        poll_interval: float = POLL_INTERVAL,
        port_range: tuple[int, int] = PORT_RANGE,
        state: StateFile | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.backoff = backoff or Backoff()
        self.startup_window = startup_window
        self.poll_interval = poll_interval
        self.port_range = port_range
        self.state = state or StateFile(self.data_dir)
        self._instances: dict[str, Instance] = {}
        self._adopted_record = False
        self._known: set[str] = set()  # ids of every instance this object managed
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- queries ------------------------------------------------------------------------

    def instances(self, app: str | None = None) -> list[Instance]:
        """The instances this supervisor manages, of one app or all."""
        found = [i for i in self._instances.values() if app is None or i.app == app]
        return sorted(found, key=lambda i: (i.app, i.release, i.port))

    def is_running(self, instance: Instance) -> bool:
        """Whether the instance is up now (False while it waits to be restarted)."""
        inst = self._instances.get(instance.id)
        return inst is not None and inst.state in ("starting", "running") and not _exited(inst)[0]

    def exit_reason(self, instance: Instance) -> str | None:
        """Why the instance is not running (None if it is): for health-check aborts."""
        if self.is_running(instance):
            return None
        inst = self._instances.get(instance.id, instance)
        exited, code = _exited(inst)
        if exited and inst.state in ("starting", "running"):
            return describe_exit(inst, code)
        return inst.last_error or f"{inst.name} is {inst.state}"

    # -- start --------------------------------------------------------------------------

    async def start(
        self,
        app: str,
        release: str,
        release_dir: Path,
        command: str,
        env: Mapping[str, str],
        port: int | None = None,
        *,
        user: str | None = None,
        limits: InstanceLimits | None = None,
    ) -> Instance:
        """Start `bash -c command` in release_dir with $PORT set, as `user` within
        `limits` (conveyor.agent.confine); fail if it exits at once."""
        if port is None:
            port = self._pick_port()
        elif not port_is_free(port):
            raise StartError(f"cannot start {app} {release}: port {port} on {LOOPBACK} is in use")
        inst = Instance(
            id=secrets.token_hex(8),
            app=app,
            release=release,
            release_dir=release_dir,
            command=command,
            port=port,
            log_path=self.data_dir / app / "logs" / f"{release}-{port}.log",
            env=dict(env),
            user=user,
            limits=limits or InstanceLimits(),
            first_started_at=time.time(),
        )
        since = self._spawn(inst)
        self._instances[inst.id] = inst
        self._save()
        self._ensure_watcher()
        deadline = time.monotonic() + self.startup_window
        try:
            while True:
                exited, code = _exited(inst)
                if exited:
                    raise StartError(
                        f"{inst.name}: `{command}` exited at once ({exit_text(code)}) in "
                        f"{release_dir}; last lines of {inst.log_path}:\n"
                        f"{indent(log_tail(inst.log_path, since=since))}"
                    )
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(0.05, self.startup_window))
        except BaseException:
            # exited, or the caller gave up on it (cancelled): nobody would own it
            self._kill_leftovers(inst)
            children.reap(inst.pid)
            del self._instances[inst.id]
            self._save()
            raise
        inst.state = "running"
        self._save()
        log.info(
            "instance started",
            extra={"app": app, "release": release, "port": port, "pid": inst.pid},
        )
        return inst

    def _pick_port(self) -> int:
        taken = {i.port for i in self._instances.values()}
        low, high = self.port_range
        for _ in range(200):
            port = random.randint(low, high)
            if port not in taken and port_is_free(port):
                return port
        raise StartError(f"no free port found on {LOOPBACK} in {low}-{high}")

    def _spawn(self, inst: Instance) -> int:
        """Start the process of an instance; returns the log offset where its output starts."""
        inst.log_path.parent.mkdir(parents=True, exist_ok=True)
        run_as = resolve_user(inst.user) if inst.user else None
        if run_as is not None:
            check_release_dir(inst.release_dir, run_as)
        argv = launch_argv(
            ["bash", "-c", inst.command],
            unit=f"conveyor-{inst.app}-{inst.id}-{inst.restarts}",
            instance=inst.id,
            user=run_as,
            limits=inst.limits,
        )
        env = process_env(
            run_as.env() if run_as else {},
            inst.env,
            {
                "PORT": str(inst.port),
                "CONVEYOR_APP": inst.app,
                "CONVEYOR_RELEASE": inst.release,
                INSTANCE_VAR: inst.id,
                DATA_VAR: str(self.data_dir),
            },
        )
        with open(inst.log_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            out.write(
                f"--- conveyor: {stamp} starting on port {inst.port}: {inst.command}\n".encode()
            )
            out.flush()
            since = out.tell()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=inst.release_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise StartError(
                    f"{inst.name}: cannot start `{inst.command}` in {inst.release_dir}: {exc}"
                ) from exc
        children.add(proc)
        inst.pid = inst.pgid = proc.pid
        # the child is not reaped before we look: its /proc entry is there, zombie or not
        inst.proc_start = procfs.start_ticks(proc.pid) or 0
        inst.started_at = time.time()
        inst.adopted = False
        inst.up_since = time.monotonic()
        return since

    # -- watching -----------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="supervisor-watch")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self._check()
            except Exception:
                log.exception("supervisor check failed")

    def _check(self) -> None:
        """One pass of the watcher: notice crashes, restart those whose backoff has passed."""
        now = time.monotonic()
        changed = False
        for inst in list(self._instances.values()):
            if inst.state == "running":
                exited, code = _exited(inst)
                if exited:
                    self._crashed(inst, code, now)
                    changed = True
            elif inst.state == "backoff" and (inst.next_restart_at or 0) <= now:
                self._restart(inst, now)
                changed = True
        if changed:
            self._save()

    def _crashed(self, inst: Instance, code: int | None, now: float) -> None:
        children.forget(inst.pid)
        self._kill_leftovers(inst)
        if now - inst.up_since >= self.backoff.reset_after:
            inst.crash_streak = 0
        delay = self.backoff.delay(inst.crash_streak)
        inst.crash_streak += 1
        inst.state = "backoff"
        inst.last_exit = code
        inst.last_error = (
            f"{describe_exit(inst, code)}; last lines of {inst.log_path}:\n"
            f"{indent(log_tail(inst.log_path))}"
        )
        inst.next_restart_at = now + delay
        log.warning(
            "instance crashed; restarting after a delay",
            extra={
                "app": inst.app,
                "release": inst.release,
                "port": inst.port,
                "pid": inst.pid,
                "exit": code,
                "delay": delay,
                "restarts": inst.restarts,
            },
        )

    def _restart(self, inst: Instance, now: float) -> None:
        inst.restarts += 1
        try:
            # same port: the router's target for this instance stays right
            if not port_is_free(inst.port):
                raise StartError(f"{inst.name}: port {inst.port} is still in use")
            self._spawn(inst)
        except StartError as exc:
            delay = self.backoff.delay(inst.crash_streak)
            inst.crash_streak += 1
            inst.last_error = str(exc)
            inst.next_restart_at = now + delay
            log.warning("instance restart failed", extra={"instance": inst.name, "error": str(exc)})
            return
        inst.state = "running"
        inst.next_restart_at = None
        log.info(
            "instance restarted",
            extra={"instance": inst.name, "pid": inst.pid, "restarts": inst.restarts},
        )

    # -- stop ---------------------------------------------------------------------------

    async def stop(self, instance: Instance, grace: float = 10.0) -> None:
        """SIGTERM the instance's process group, SIGKILL it after grace; forget it."""
        inst = self._instances.get(instance.id, instance)
        inst.state = "stopping"
        inst.next_restart_at = None
        if inst.id in self._instances:
            self._save()
        if self._signal(inst, signal.SIGTERM) and not await self._wait_gone(inst, grace):
            log.warning(
                "instance ignored SIGTERM; killing it",
                extra={"instance": inst.name, "pid": inst.pid, "grace": grace},
            )
            self._signal(inst, signal.SIGKILL)
            if not await self._wait_gone(inst, KILL_WAIT):
                log.error("instance survived SIGKILL", extra={"instance": inst.name})
        children.forget(inst.pid)
        inst.state = "stopped"
        if self._instances.pop(inst.id, None) is not None:
            self._save()
        instance.state = "stopped"
        log.info("instance stopped", extra={"instance": inst.name, "pid": inst.pid})

    async def stop_all(self, grace: float = 10.0, app: str | None = None) -> None:
        await asyncio.gather(*(self.stop(i, grace) for i in self.instances(app)))

    def _members(self, inst: Instance) -> list[int]:
        """Live processes of the instance's group that are provably the instance's."""
        leader_ok = procfs.is_running(inst.pid, inst.proc_start)
        found = []
        for member in procfs.group_members(inst.pgid):
            if member.pid == inst.pid:
                if leader_ok:
                    found.append(member.pid)
            elif leader_ok or procfs.environ(member.pid).get(INSTANCE_VAR) == inst.id:
                # with the leader gone, a reused pgid could name someone else's group:
                # the instance id in the environment says whose process it is
                found.append(member.pid)
        return found

    def _signal(self, inst: Instance, sig: signal.Signals) -> bool:
        """Signal the instance's processes; False if none was left."""
        children.exited(
            inst.pid, inst.proc_start
        )  # reap our child first, or a zombie leader would look alive
        if procfs.is_running(inst.pid, inst.proc_start):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(inst.pgid, sig)
                return True
        members = self._members(inst)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return bool(members)

    def _kill_leftovers(self, inst: Instance) -> None:
        """After the leader exited: whatever it left in its group must not hold the port."""
        self._signal(inst, signal.SIGKILL)

    async def _wait_gone(self, inst: Instance, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            _exited(inst)
            if not self._members(inst):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    # -- adoption -----------------------------------------------------------------------

    async def adopt(self) -> AdoptResult:
        """Re-attach to the recorded instances still alive (after an agent restart).

        Dead ones (or whose pid now names another process) are dropped from the record
        and returned, for the caller to start again. Instances of this data directory
        missing from the record (the agent died between starting one and recording it)
        are stopped: nothing routes to them.
        """
        records = self.state.load().instances
        adopted: list[Instance] = []
        dead: list[InstanceRecord] = []
        for rec in records:
            if rec.id in self._instances:
                continue
            if not procfs.is_running(rec.pid, rec.proc_start):
                if procfs.start_ticks(rec.pid) == rec.proc_start:
                    children.forget(rec.pid)  # our own zombie: reap it
                dead.append(rec)
                log.warning(
                    "recorded instance is gone",
                    extra={"app": rec.app, "release": rec.release, "port": rec.port},
                )
                continue
            inst = Instance.from_record(rec)
            inst.up_since = time.monotonic()
            self._instances[inst.id] = inst
            if rec.state == "stopping":
                # the previous agent was stopping it: finish the job
                self._spawn_background(self.stop(inst, grace=KILL_WAIT))
                continue
            inst.state = "running"
            adopted.append(inst)
            log.info("instance adopted", extra={"instance": inst.name, "pid": inst.pid})
        self._adopted_record = True
        orphans = self._orphans({rec.id for rec in records} | set(self._instances))
        for pid in orphans:
            log.warning("stopping an unrecorded instance", extra={"pid": pid})
        await asyncio.gather(*(_stop_pid(pid) for pid in orphans))
        self._save()
        self._ensure_watcher()
        return AdoptResult(adopted=adopted, dead=dead, orphans=orphans)

    def _orphans(self, known: set[str]) -> list[int]:
        """Session leaders started by a supervisor of this data directory, not recorded."""
        found = []
        mine = str(self.data_dir)
        for pid in procfs.pids():
            stat = procfs.read_stat(pid)
            if stat is None or stat.session != pid or stat.state in ("Z", "X", "x"):
                continue
            env = procfs.environ(pid)
            if env.get(DATA_VAR) == mine and env.get(INSTANCE_VAR) not in known:
                found.append(pid)
        return found

    def _spawn_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- record -------------------------------------------------------------------------

    def _save(self) -> None:
        mine = [i.record() for i in self._instances.values()]
        self._known.update(r.id for r in mine)
        known = self._known

        def change(state: AgentState) -> None:
            # until adopt() ran, instances of the previous agent stay in the record
            kept = [] if self._adopted_record else [r for r in state.instances if r.id not in known]
            state.instances = kept + mine

        self.state.update(change)

    async def close(self) -> None:
        """Stop watching (instances keep running: they outlive the agent)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


async def _stop_pid(pid: int, grace: float = KILL_WAIT) -> None:
    start = procfs.start_ticks(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while procfs.is_running(pid, start) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if procfs.is_running(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _exited(inst: Instance) -> tuple[bool, int | None]:
    return children.exited(inst.pid, inst.proc_start)
