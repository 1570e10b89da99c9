"""hooks.migrate on a host: once per deployment id, after install, before the instance starts.

A real Reconciler (reconciling.py) installs a real artifact from a small HTTP server,
runs the hook with bash and starts a real instance; only the router is in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conveyor.agent import procfs
from conveyor.agent.installer import Installer
from conveyor.agent.loop import Reconciler
from conveyor.agent.migrations import MIGRATIONS_FILE, Migrations
from conveyor.protocol import MigrateRequest, MigrationResult
from tests.agent.conftest import HttpServer, Route, kill_instances
from tests.agent.reconciling import (
    CHILD_SCRIPT,
    MemoryRouter,
    app_artifact,
    desired,
    make_reconciler,
    observed,
    running,
    until,
)

ROOT = Path(__file__).resolve().parents[2]


def serve_artifact(http_server: HttpServer, tmp_path: Path) -> str:
    body, sha256 = app_artifact(tmp_path / "r1.tar.gz")
    http_server.routes["/artifacts/r1"] = Route(body=body)
    return sha256


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().splitlines() if path.exists() else []


def hook_env(tmp_path: Path) -> dict[str, str]:
    return {"RUNS": str(tmp_path / "runs"), "GATE": str(tmp_path / "gate"), "GREETING": "hi"}


# appends one line per run, then waits for the test to open the gate
GATED = (
    'echo "$CONVEYOR_MIGRATION $CONVEYOR_APP $CONVEYOR_RELEASE $GREETING $PWD" >> "$RUNS"; '
    'echo migrating; until [ -e "$GATE" ]; do sleep 0.02; done; echo "migrated"'
)


def phase(rec: Reconciler) -> str | None:
    found = observed(rec)
    return found.phase if found else None


def migration(rec: Reconciler) -> MigrationResult | None:
    found = observed(rec)
    return found.migration if found else None


def _pid(rec: Reconciler) -> int | None:
    found = observed(rec)
    return found.pid if found else None


_empty = MigrationResult(id="", state="failed")  # stands in for "not reported yet"


def routes(router: object) -> dict[str, int]:
    assert isinstance(router, MemoryRouter)
    return router.weights("shop")


async def test_migrates_once_then_starts_the_instance(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    migrate = MigrateRequest(id="deployment-1", command=GATED, timeout=30)
    async with running(make_reconciler(data, http_server.url(""))) as rec:
        rec.set_desired(desired(1, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: "migrating" in (migration(rec) or _empty).output)
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        # installed, migrating, and nothing started yet
        assert (seen.phase, seen.migration.state, seen.instances, seen.pid) == (
            "installing",
            "running",
            0,
            None,
        )
        assert rec.supervisor.instances() == [] and routes(rec.router) == {}
        (tmp_path / "gate").touch()
        await until(lambda: phase(rec) == "healthy" and rec.routed["shop"])
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        assert seen.migration.state == "succeeded" and seen.migration.exit_code == 0
        assert seen.migration.output == "migrating\nmigrated\n"
        assert seen.migration.finished_at is not None
        assert seen.migration.finished_at <= time.time()
        release_dir = data / "shop" / "releases" / "r1"
        assert runs(tmp_path) == [f"deployment-1 shop r1 hi {release_dir}"]
        assert routes(rec.router) == {"r1": 100}
        log_path = data / "shop" / "logs" / "r1-migrate-deployment-1.log"
        assert "migrated" in log_path.read_text()
        pid = seen.pid

        # a new generation carrying the same id: nothing runs again, the result is reported
        rec.set_desired(desired(2, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: rec.observed(True).generation == 2 and rec.observed(True).converged)
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        assert seen.migration.state == "succeeded" and seen.pid == pid
        assert len(runs(tmp_path)) == 1

        # no migration asked for any more: none reported
        rec.set_desired(desired(3, sha256, env=hook_env(tmp_path)))
        await until(lambda: rec.observed(True).generation == 3 and rec.observed(True).converged)
        seen = observed(rec)
        assert seen is not None and seen.migration is None and seen.phase == "healthy"


async def test_a_failed_migration_fails_the_release_and_starts_nothing(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    command = 'echo run >> "$RUNS"; echo applying 0042; echo "relation users missing" >&2; exit 3'
    migrate = MigrateRequest(id="deployment-2", command=command)
    async with running(make_reconciler(data, http_server.url(""))) as rec:
        rec.set_desired(desired(1, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: phase(rec) == "failed")
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        assert seen.error == "migrate hook failed (exit 3)"
        assert (seen.migration.state, seen.migration.exit_code) == ("failed", 3)
        assert seen.migration.output == "applying 0042\nrelation users missing\n"
        assert (seen.instances, seen.pid) == (0, None)
        assert rec.supervisor.instances() == [] and routes(rec.router) == {}
        await until(lambda: rec.app_errors.get("shop"))  # said on the next tick
        app = rec.observed(True).apps[0]
        assert not app.routed and app.error is not None and "exit 3" in app.error

        # a new generation with the same id does not run it again: the release stays failed
        rec.set_desired(desired(2, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: rec.observed(True).generation == 2)
        await until(lambda: phase(rec) == "failed")
        seen = observed(rec)
        assert seen is not None and seen.error == "migrate hook failed (exit 3)"
        assert runs(tmp_path) == ["run"] and rec.supervisor.instances() == []


async def test_a_migration_that_times_out_is_killed_and_fails(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    command = 'echo $$ > "$RUNS"; echo started; exec sleep 60'
    migrate = MigrateRequest(id="deployment-3", command=command, timeout=0.5)
    async with running(make_reconciler(data, http_server.url(""))) as rec:
        started = time.monotonic()
        rec.set_desired(desired(1, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: phase(rec) == "failed")
        assert time.monotonic() - started < 10
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        assert seen.error == "migrate hook failed (timed out after 0.5s and was killed)"
        assert (seen.migration.state, seen.migration.exit_code) == ("failed", None)
        assert seen.migration.output.startswith("started\n")
        assert "timed out after 0.5s" in seen.migration.output
        assert rec.supervisor.instances() == []
        hook_pid = int(runs(tmp_path)[0])
        assert not procfs.is_running(hook_pid)


async def test_a_restarted_agent_never_runs_a_migration_again(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    (tmp_path / "gate").touch()
    migrate = MigrateRequest(id="deployment-4", command=GATED)
    state = desired(1, sha256, migrate=migrate, env=hook_env(tmp_path))
    async with running(make_reconciler(data, http_server.url(""))) as first:
        first.set_desired(state)
        await until(lambda: first.observed(True).converged)
        pid = _pid(first)
    assert len(runs(tmp_path)) == 1

    # restarted with its instance still running: adopted, the recorded result reported
    async with running(make_reconciler(data, http_server.url(""))) as second:
        await until(lambda: second.observed(True).converged)
        seen = observed(second)
        assert seen is not None and seen.migration is not None
        assert seen.pid == pid and seen.migration.state == "succeeded"
        assert seen.migration.output == "migrating\nmigrated\n"

    # restarted after everything died: the instance starts again, the migration does not run
    kill_instances(data)
    async with running(make_reconciler(data, http_server.url(""))) as third:
        await until(lambda: third.observed(True).converged)
        seen = observed(third)
        assert seen is not None and seen.migration is not None
        assert seen.pid not in (None, pid) and seen.migration.state == "succeeded"
    assert len(runs(tmp_path)) == 1


async def test_an_agent_killed_during_the_migration_fails_it_as_interrupted(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    migrate = MigrateRequest(id="deployment-5", command=GATED)
    state = desired(1, sha256, migrate=migrate, env=hook_env(tmp_path))
    (data / "desired.json").write_text(state.model_dump_json())
    record = data / "shop" / MIGRATIONS_FILE
    with open(tmp_path / "child.log", "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, str(data), http_server.url("")],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    hook_pid = None
    try:

        def hook_started() -> int | None:
            if not record.exists() or not runs(tmp_path):
                return None
            entry = json.loads(record.read_text())["migrations"]["deployment-5"]
            return int(entry["pid"]) if entry["pid"] else None

        await until(lambda: hook_started() or child.poll() is not None)
        assert child.poll() is None, (tmp_path / "child.log").read_text()
        hook_pid = hook_started()
        assert hook_pid is not None
        child.kill()  # kill -9 while the hook runs: it is left behind, in a session of its own
        child.wait()
        assert procfs.is_running(hook_pid)

        async with running(make_reconciler(data, http_server.url(""))) as rec:
            await until(lambda: not procfs.is_running(hook_pid))  # the leftover hook is killed
            await until(lambda: phase(rec) == "failed")
            seen = observed(rec)
            assert seen is not None and seen.migration is not None
            assert seen.error == (
                "migrate hook failed (interrupted: the agent stopped while the migrate hook ran)"
            )
            assert (seen.migration.state, seen.migration.exit_code) == ("failed", None)
            assert seen.migration.output.startswith("migrating\n")
            assert "interrupted" in seen.migration.output
            (tmp_path / "gate").touch()
            await rec.tick()
            assert rec.supervisor.instances() == []
        assert len(runs(tmp_path)) == 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if hook_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hook_pid, signal.SIGKILL)


async def test_a_migration_asked_of_a_running_release_runs_before_it_is_healthy_again(
    data: Path, http_server: HttpServer, tmp_path: Path
) -> None:
    sha256 = serve_artifact(http_server, tmp_path)
    async with running(make_reconciler(data, http_server.url(""))) as rec:
        rec.set_desired(desired(1, sha256, env=hook_env(tmp_path)))
        await until(lambda: rec.observed(True).converged)
        pid = _pid(rec)

        migrate = MigrateRequest(id="deployment-6", command=GATED)
        rec.set_desired(desired(2, sha256, migrate=migrate, env=hook_env(tmp_path)))
        await until(lambda: (migration(rec) or _empty).state == "running")
        seen = observed(rec)
        assert seen is not None and seen.phase == "starting" and seen.pid == pid
        assert not rec.observed(True).converged
        assert routes(rec.router) == {"r1": 100}  # the routing it had is kept meanwhile
        (tmp_path / "gate").touch()
        await until(lambda: rec.observed(True).converged)
        seen = observed(rec)
        assert seen is not None and seen.migration is not None
        assert seen.migration.state == "succeeded" and seen.pid == pid  # not restarted

        # a failing one fails the release but leaves its instance (it may be serving) running
        failing = MigrateRequest(id="deployment-7", command="echo nope; exit 4")
        rec.set_desired(desired(3, sha256, migrate=failing, env=hook_env(tmp_path)))
        await until(lambda: phase(rec) == "failed")
        seen = observed(rec)
        assert seen is not None and seen.error == "migrate hook failed (exit 4)"
        assert seen.pid == pid and routes(rec.router) == {"r1": 100}
    assert len(runs(tmp_path)) == 1


# -- the record, without a reconciler -----------------------------------------------------


async def test_output_is_the_last_4000_characters(data: Path, tmp_path: Path) -> None:
    migrations = Migrations(Installer(data))
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    command = "for i in $(seq 1 2000); do echo line-$i; done"
    request = MigrateRequest(id="deployment-8", command=command)
    result = await migrations.run("shop", "r1", request, release_dir, {})
    assert (result.state, result.exit_code) == ("succeeded", 0)
    assert len(result.output) == 4000 and result.output.endswith("line-2000\n")
    # the same answer from the file, for a new agent
    again = Migrations(Installer(data)).result("shop", "deployment-8")
    assert again == result


async def test_an_unreadable_record_refuses_migrations(data: Path, tmp_path: Path) -> None:
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    record = data / "shop" / MIGRATIONS_FILE
    record.parent.mkdir(parents=True)
    record.write_text('{"version": 1, "migrations": {"deployment-1": {"trunc')
    migrations = Migrations(Installer(data))
    request = MigrateRequest(id="deployment-1", command=f"touch {tmp_path / 'ran'}")
    result = await migrations.run("shop", "r1", request, release_dir, {})
    # it may have run before: it must not run again, and someone must look
    assert result.state == "failed" and not (tmp_path / "ran").exists()
    failure = migrations.failure("shop", "deployment-1")
    assert failure is not None and "unreadable and is set aside" in failure
    assert "set aside" in result.output
    assert list(record.parent.glob(f"{MIGRATIONS_FILE}.corrupt-*"))
