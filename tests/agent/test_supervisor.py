from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conveyor.agent import procfs
from conveyor.agent.records import STATE_FILE, AgentState, StateFile
from conveyor.agent.supervisor import (
    PORT_RANGE,
    Backoff,
    Instance,
    StartError,
    Supervisor,
    port_is_free,
)
from tests.agent.conftest import APP_COMMAND
from tests.helpers import wait_for_async


def fast(data: Path, backoff: Backoff | None = None) -> Supervisor:
    """A supervisor that polls often, so that tests stay short."""
    return Supervisor(data, backoff=backoff, poll_interval=0.05, startup_window=0.2)


def record(data: Path) -> dict[str, dict[str, object]]:
    state = json.loads((data / STATE_FILE).read_text())
    return {r["id"]: r for r in state["instances"]}


async def get_env(port: int) -> dict[str, str]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/", timeout=5)
        result: dict[str, str] = response.json()
        return result


async def until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    await wait_for_async(predicate, timeout=timeout, interval=0.02)


async def serving(port: int, timeout: float = 10.0) -> None:
    async def answers() -> bool:
        try:
            await get_env(port)
        except httpx.HTTPError:
            return False
        return True

    await wait_for_async(answers, timeout=timeout, interval=0.02)


def gone(pid: int) -> bool:
    return not procfs.is_running(pid)


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1), (1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (12, 30)]
)
def test_backoff_delays(failures: int, delay: float) -> None:
    assert Backoff().delay(failures) == delay


async def test_start_gives_port_and_env_and_logs(
    data: Path, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", "the-agent-secret")
    async with fast(data) as sup:
        inst = await sup.start(
            "shop", "abc1234-1", app_dir, APP_COMMAND, {"LOG_LEVEL": "info", "PORT": "1"}
        )
        assert inst.state == "running"
        assert PORT_RANGE[0] <= inst.port <= PORT_RANGE[1]
        await serving(inst.port)
        env = await get_env(inst.port)
        assert env["PORT"] == str(inst.port)  # ours wins over the service's env
        assert env["CONVEYOR_APP"] == "shop"
        assert env["CONVEYOR_RELEASE"] == "abc1234-1"
        assert env["LOG_LEVEL"] == "info"
        assert "CONVEYOR_TOKEN" not in env
        assert os.getsid(inst.pid) == inst.pid  # its own session: it outlives the agent
        assert inst.log_path == data / "shop" / "logs" / f"abc1234-1-{inst.port}.log"
        assert f"listening on {inst.port}" in inst.log_path.read_text()
        saved = record(data)[inst.id]
        assert saved["pid"] == saved["pgid"] == inst.pid
        assert saved["proc_start"] == procfs.start_ticks(inst.pid)
        assert saved["state"] == "running"
        assert saved["port"] == inst.port
        assert saved["command"] == APP_COMMAND
        assert oct((data / STATE_FILE).stat().st_mode & 0o777) == "0o600"  # env holds secrets
        assert [i.id for i in sup.instances("shop")] == [inst.id]
        assert sup.instances("other") == []
        await sup.stop(inst, grace=5)
        assert gone(inst.pid)
        assert record(data) == {}
        assert sup.instances() == []


async def test_exits_at_once_is_reported(data: Path, app_dir: Path) -> None:
    async with fast(data) as sup:
        with pytest.raises(StartError) as info:
            await sup.start(
                "shop", "r1", app_dir, "echo 'config: bad value' >&2; exit 3", {"A": "b"}
            )
    message = str(info.value)
    assert "exited at once (exit code 3)" in message
    assert "config: bad value" in message
    assert str(app_dir) in message
    assert record(data) == {}


async def test_a_cancelled_start_leaves_nothing_running(data: Path, app_dir: Path) -> None:
    sup = Supervisor(data, startup_window=5)
    task = asyncio.create_task(sup.start("shop", "r1", app_dir, "echo up; sleep 300", {}))
    log_path = data / "shop" / "logs"
    await until(
        lambda: log_path.exists() and "up" in "".join(p.read_text() for p in log_path.iterdir())
    )
    pid = next(iter(sup.instances())).pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)
    assert sup.instances() == [] and record(data) == {}
    await sup.close()


async def test_a_taken_port_is_refused(data: Path, app_dir: Path) -> None:
    async with fast(data) as sup:
        first = await sup.start("shop", "r1", app_dir, APP_COMMAND, {})
        await serving(first.port)
        assert not port_is_free(first.port)
        with pytest.raises(StartError, match=f"port {first.port} on 127.0.0.1 is in use"):
            await sup.start("shop", "r2", app_dir, APP_COMMAND, {}, port=first.port)
        await sup.stop_all(grace=5)


async def test_a_crashed_instance_is_restarted_with_backoff(data: Path, app_dir: Path) -> None:
    starts = app_dir / "starts"
    command = f'echo "$(date +%s.%N) $$ $PORT" >> {starts}; sleep 0.3; exit 1'
    backoff = Backoff(initial=0.25, factor=2, cap=0.6, reset_after=60)
    async with fast(data, backoff) as sup:
        inst = await sup.start("shop", "r1", app_dir, command, {})
        first_pid = inst.pid
        await until(lambda: starts.exists() and len(starts.read_text().splitlines()) >= 5, 15)
        lines = [line.split() for line in starts.read_text().splitlines()][:5]
        times = [float(t) for t, _, _ in lines]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # each gap is the 0.3s run plus the delay: 0.25, 0.5, then capped at 0.6
        for gap, delay in zip(gaps, [0.25, 0.5, 0.6, 0.6], strict=True):
            assert delay + 0.3 <= gap < delay + 0.3 + 0.5, gaps
        assert {port for _, _, port in lines} == {str(inst.port)}  # same port every time
        assert len({pid for _, pid, _ in lines}) == 5
        assert inst.pid != first_pid
        assert inst.last_exit == 1
        assert inst.last_error is not None and "exit code 1" in inst.last_error
        assert record(data)[inst.id]["restarts"] == inst.restarts
        await sup.stop(inst, grace=1)
        restarts = inst.restarts
        await asyncio.sleep(0.6)
        assert inst.restarts == restarts  # a stopped instance is not restarted
        assert record(data) == {}


async def test_backoff_starts_over_after_a_healthy_run(data: Path, app_dir: Path) -> None:
    starts = app_dir / "starts"
    command = f'echo "$(date +%s.%N)" >> {starts}; sleep 0.4; exit 1'
    backoff = Backoff(initial=0.2, factor=4, cap=10, reset_after=0.3)
    async with fast(data, backoff) as sup:
        inst = await sup.start("shop", "r1", app_dir, command, {})
        await until(lambda: starts.exists() and len(starts.read_text().split()) >= 4)
        times = [float(t) for t in starts.read_text().split()][:4]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # runs of 0.4s count as healthy: the delay stays 0.2s instead of 0.8s, 3.2s
        assert all(0.6 <= gap < 1.0 for gap in gaps), gaps
        await sup.stop(inst, grace=1)


async def test_stop_sends_term_to_the_group(data: Path, app_dir: Path) -> None:
    command = "trap 'echo got TERM; exit 0' TERM; sleep 300 & sleep 300 & wait"
    async with fast(data) as sup:
        inst = await sup.start("shop", "r1", app_dir, command, {})
        await until(lambda: len(procfs.group_members(inst.pgid)) == 3)
        started = time.monotonic()
        await sup.stop(inst, grace=10)
        assert time.monotonic() - started < 2
        assert procfs.group_members(inst.pgid) == []
        assert "got TERM" in inst.log_path.read_text()
        assert inst.state == "stopped"


async def test_stop_kills_what_ignores_term(data: Path, app_dir: Path) -> None:
    command = "trap '' TERM; echo stubborn; sleep 300"
    async with fast(data) as sup:
        inst = await sup.start("shop", "r1", app_dir, command, {})
        await until(lambda: "stubborn" in inst.log_path.read_text())
        started = time.monotonic()
        await sup.stop(inst, grace=0.5)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 3
        assert procfs.group_members(inst.pgid) == []
        assert record(data) == {}


async def _start_and_leave(data: Path, app_dir: Path) -> Instance:
    """The first agent: start an instance, then go away (its loop ends, object discarded)."""
    sup = fast(data)
    inst = await sup.start("shop", "r1", app_dir, APP_COMMAND, {"SECRET": "s3cret"})
    await serving(inst.port)
    await sup.close()
    return inst


def test_adopt_reattaches_after_a_restart_without_restarting(data: Path, app_dir: Path) -> None:
    old = asyncio.run(_start_and_leave(data, app_dir))

    async def second_agent() -> None:
        async with fast(data) as sup:
            result = await sup.adopt()
            assert [i.pid for i in result] == [old.pid]
            assert result.dead == [] and result.orphans == []
            inst = result.adopted[0]
            assert (inst.id, inst.port, inst.state, inst.restarts) == (
                old.id,
                old.port,
                "running",
                0,
            )
            assert inst.adopted and sup.is_running(inst)
            env = await get_env(inst.port)
            assert env["SECRET"] == "s3cret"
            assert inst.log_path.read_text().count("--- conveyor:") == 1  # started once
            # it is still watched: a crash is noticed and the instance restarted
            os.kill(inst.pid, signal.SIGKILL)
            await until(lambda: inst.restarts == 1 and inst.state == "running")
            assert inst.pid != old.pid and inst.port == old.port
            await serving(inst.port)
            assert (await get_env(inst.port))["SECRET"] == "s3cret"
            await sup.stop(inst, grace=5)

    asyncio.run(second_agent())


AGENT_SCRIPT = """\
import asyncio, json, sys
from pathlib import Path
from conveyor.agent.supervisor import Supervisor

async def main():
    sup = Supervisor(Path(sys.argv[1]), startup_window=0.2)
    inst = await sup.start("shop", "r1", Path(sys.argv[2]), sys.argv[3], {})
    print(json.dumps({"pid": inst.pid, "port": inst.port}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_adopt_after_the_agent_was_killed(data: Path, app_dir: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_SCRIPT, str(data), str(app_dir), APP_COMMAND],
        stdout=subprocess.PIPE,
    )
    assert agent.stdout is not None
    started = json.loads(agent.stdout.readline())
    agent.kill()  # kill -9: no cleanup of any kind
    agent.wait()
    agent.stdout.close()
    await serving(started["port"])
    async with fast(data) as sup:
        result = await sup.adopt()
        assert [(i.pid, i.port) for i in result] == [(started["pid"], started["port"])]
        inst = result.adopted[0]
        assert inst.state == "running" and inst.restarts == 0
        # not our child: its death is seen through /proc
        os.kill(inst.pid, signal.SIGKILL)
        await until(lambda: inst.restarts == 1 and inst.state == "running")
        assert inst.last_error is not None and "exit code unknown" in inst.last_error
        await serving(inst.port)
        await sup.stop(inst, grace=5)


async def test_adopt_reports_the_dead_and_guards_against_pid_reuse(
    data: Path, app_dir: Path
) -> None:
    async with fast(data) as first:
        alive = await first.start("shop", "r1", app_dir, APP_COMMAND, {})
        dead = await first.start("shop", "r2", app_dir, "sleep 300", {})
    # another process now holds a pid from the record: same pid, other start time
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:

        def fake(state: AgentState) -> None:
            for rec in state.instances:
                if rec.release == "r2":
                    rec.pid = rec.pgid = stranger.pid
                    rec.proc_start = (procfs.start_ticks(stranger.pid) or 0) - 1

        StateFile(data).update(fake)
        os.killpg(dead.pid, signal.SIGKILL)
        async with fast(data) as sup:
            result = await sup.adopt()
            assert [i.release for i in result] == ["r1"]
            assert [r.release for r in result.dead] == ["r2"]
            assert procfs.is_running(stranger.pid)  # never signalled
            assert [r["release"] for r in record(data).values()] == ["r1"]
            # stop() checks identity too: an instance whose pid was reused kills nothing
            ghost = Instance.from_record(result.dead[0])
            await sup.stop(ghost, grace=0.2)
            assert procfs.is_running(stranger.pid)
            await sup.stop(result.adopted[0], grace=5)
            assert gone(alive.pid)
    finally:
        stranger.kill()
        stranger.wait()


async def test_adopt_stops_unrecorded_instances(data: Path, app_dir: Path) -> None:
    async with fast(data) as first:
        kept = await first.start("shop", "r1", app_dir, APP_COMMAND, {})
        lost = await first.start("shop", "r2", app_dir, APP_COMMAND, {})

    # as if the agent died between starting r2 and recording it
    def forget(state: AgentState) -> None:
        state.instances = [r for r in state.instances if r.release != "r2"]

    StateFile(data).update(forget)
    async with fast(data) as sup:
        result = await sup.adopt()
        assert [i.pid for i in result] == [kept.pid]
        assert result.orphans == [lost.pid]
        await until(lambda: gone(lost.pid))
        assert procfs.is_running(kept.pid)
        await sup.stop_all(grace=5)


async def test_start_before_adopt_keeps_the_previous_record(data: Path, app_dir: Path) -> None:
    async with fast(data) as first:
        old = await first.start("shop", "r1", app_dir, APP_COMMAND, {})
    async with fast(data) as sup:
        new = await sup.start("shop", "r2", app_dir, APP_COMMAND, {})
        assert set(record(data)) == {old.id, new.id}
        result = await sup.adopt()
        assert [i.id for i in result] == [old.id]
        assert [i.release for i in sup.instances()] == ["r1", "r2"]
        await sup.stop_all(grace=5)
        assert record(data) == {}
