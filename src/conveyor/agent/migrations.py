"""Migrations: run an app's `hooks.migrate` at most once per deployment, and remember it.

The controller asks for one through the desired state (`DesiredRelease.migrate`); the
agent runs it after the release is installed and before its instance starts. Each id
runs at most once, durably: `<data>/<app>/migrations.json` records an id as running
*before* its hook starts and its result when the hook ends, so an agent restarted at
any moment reports what it recorded instead of running the hook again. An id still
recorded as running when an agent starts was cut short by the previous agent's death:
its hook, if still alive, is killed, and the migration is failed as interrupted, never
run a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, ValidationError

from conveyor.agent import procfs
from conveyor.agent.installer import Installer, check_name
from conveyor.agent.records import Record, atomic_write
from conveyor.protocol import MigrateRequest, MigrationResult

log = logging.getLogger("conveyor.agent.migrations")

MIGRATIONS_FILE = "migrations.json"
MIGRATION_VAR = "CONVEYOR_MIGRATION"
OUTPUT_CHARS = 4000
KEEP_OUTPUT = 20  # older results keep their outcome (ids are never forgotten), not their output
INTERRUPTED = "interrupted: the agent stopped while the migrate hook ran"
CANCELLED = (
    "interrupted: the agent stopped the migrate hook (it was stopping, or the release was "
    "no longer desired)"
)


class MigrationRecord(Record):
    """One migration this host ran (or started)."""

    release: str
    started_at: float = Field(description="unix time")
    log_path: str
    since: int = Field(default=0, description="where the hook's output starts in its log")
    pid: int | None = Field(default=None, description="the hook's pid (= its process group)")
    proc_start: int | None = None
    reason: str | None = Field(default=None, description="why it failed, for the release's error")
    result: MigrationResult


class Migrations:
    """The migrations of every app under one data directory: run them, report them."""

    def __init__(self, installer: Installer) -> None:
        self.installer = installer
        self._books: dict[str, dict[str, MigrationRecord]] = {}
        self._running: set[tuple[str, str]] = set()  # (app, id) run by this process now

    def path(self, app: str) -> Path:
        return self.installer.app_dir(app) / MIGRATIONS_FILE

    def recover(self) -> None:
        """At agent start: fail (as interrupted) what a previous agent left running."""
        root = self.installer.data_dir
        if root.is_dir():
            for entry in sorted(root.iterdir()):
                if (entry / MIGRATIONS_FILE).is_file():
                    self._book(entry.name)

    def result(self, app: str, migration: str) -> MigrationResult | None:
        """What is known of one migration; a running one's output is read live."""
        rec = self._book(app).get(migration)
        if rec is None:
            return None
        if rec.result.state == "running":
            return rec.result.model_copy(update={"output": _output(rec)})
        return rec.result

    def failure(self, app: str, migration: str) -> str | None:
        """The error a release gets from a failed migration (None unless it failed)."""
        rec = self._book(app).get(migration)
        if rec is None or rec.result.state != "failed":
            return None
        return f"migrate hook failed ({rec.reason or 'unknown'})"

    async def run(
        self,
        app: str,
        release: str,
        request: MigrateRequest,
        release_dir: Path,
        env: Mapping[str, str],
        user: str | None = None,
    ) -> MigrationResult:
        """Run the hook (as `user`, service.user) unless this id was ever started here;
        the (recorded) result."""
        book = self._book(app)
        known = book.get(request.id)
        if known is not None:
            return known.result
        check_name("migration id", request.id)
        log_path = self.installer.app_dir(app) / "logs" / f"{release}-migrate-{request.id}.log"
        rec = MigrationRecord(
            release=release,
            started_at=time.time(),
            log_path=str(log_path),
            result=MigrationResult(id=request.id, state="running"),
        )
        # recorded before the hook starts: from here on this id never runs again
        book[request.id] = rec
        self._save(app)
        fields = {"app": app, "release": release, "migration": request.id}
        aside = self._set_aside(app)
        if aside is not None:
            self._finish(
                app,
                rec,
                None,
                f"the record of the migrations run on this host was unreadable and is set aside "
                f"as {aside}: check which ran, then remove that file",
            )
            log.error("migration refused", extra=fields | {"reason": rec.reason})
            return rec.result
        log.info("migration started", extra=fields | {"command": request.command})
        key = (app, request.id)
        self._running.add(key)

        def started(pid: int, since: int) -> None:
            rec.pid, rec.proc_start, rec.since = pid, procfs.start_ticks(pid), since
            self._save(app)

        code: int | None = None
        reason: str | None
        try:
            done = await self.installer.exec_hook(
                request.command,
                release_dir,
                _migration_env(env, request),
                log_path,
                request.timeout,
                name="migrate",
                on_start=started,
                user=user,
            )
            code = done.code
            if code is None:
                reason = f"timed out after {request.timeout:g}s and was killed"
            elif code < 0:
                reason = f"killed by signal {-code}"
            else:
                reason = None if code == 0 else f"exit {code}"
        except asyncio.CancelledError:
            self._finish(app, rec, None, CANCELLED)
            raise
        except Exception as exc:
            # it could not start, or its pid could not be recorded (then it was killed)
            reason = str(exc)
        finally:
            self._running.discard(key)
        self._finish(app, rec, code, reason)
        log.log(
            logging.INFO if rec.result.state == "succeeded" else logging.WARNING,
            f"migration {rec.result.state}",
            extra=fields | {"exit_code": rec.result.exit_code, "reason": rec.reason},
        )
        return rec.result

    def _finish(self, app: str, rec: MigrationRecord, code: int | None, reason: str | None) -> None:
        if reason is not None and code is None:
            # the hook could not say it: the output is what the controller shows of it
            with contextlib.suppress(OSError):
                Path(rec.log_path).parent.mkdir(parents=True, exist_ok=True)
                with open(rec.log_path, "a") as out:
                    out.write(f"--- conveyor: migrate hook failed ({reason})\n")
        rec.reason = reason
        rec.result = MigrationResult(
            id=rec.result.id,
            state="succeeded" if code == 0 and reason is None else "failed",
            exit_code=code,
            output=_output(rec),
            finished_at=time.time(),
        )
        self._save(app)

    # -- the file -----------------------------------------------------------------------

    def _book(self, app: str) -> dict[str, MigrationRecord]:
        book = self._books.get(app)
        if book is not None:
            return book
        book = self._books[app] = self._read(app)
        stale = [
            rec
            for id_, rec in book.items()
            if rec.result.state == "running" and (app, id_) not in self._running
        ]
        for rec in stale:
            _kill_leftover(rec)
            log.warning(
                "migration interrupted by an agent restart",
                extra={"app": app, "release": rec.release, "migration": rec.result.id},
            )
            self._finish(app, rec, None, INTERRUPTED)
        return book

    def _set_aside(self, app: str) -> Path | None:
        found = sorted(self.installer.app_dir(app).glob(f"{MIGRATIONS_FILE}.corrupt-*"))
        return found[-1] if found else None

    def _read(self, app: str) -> dict[str, MigrationRecord]:
        path = self.path(app)
        try:
            raw = json.loads(path.read_bytes())
            return {
                id_: MigrationRecord.model_validate(rec)
                for id_, rec in raw.get("migrations", {}).items()
            }
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError, ValidationError) as exc:
            # refusing to start would stop every app on this host, and running a migration
            # twice could break one: set the file aside, and fail every migration of this
            # app until someone has looked at it (see run)
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error(
                "migration record is unreadable; set aside",
                extra={"path": str(path), "moved_to": str(aside), "error": str(exc)},
            )
            return {}

    def _save(self, app: str) -> None:
        book = self._books[app]
        newest = sorted(book, key=lambda id_: book[id_].started_at, reverse=True)
        for id_ in newest[KEEP_OUTPUT:]:
            book[id_].result.output = ""
        text = json.dumps(
            {"version": 1, "migrations": {k: v.model_dump(mode="json") for k, v in book.items()}},
            indent=2,
            sort_keys=True,
        )
        atomic_write(self.path(app), text.encode("utf-8") + b"\n")


def _output(rec: MigrationRecord) -> str:
    """The last OUTPUT_CHARS characters the hook wrote to its log."""
    try:
        with open(rec.log_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(rec.since, size - 4 * OUTPUT_CHARS))
            data = fh.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")[-OUTPUT_CHARS:]


def _kill_leftover(rec: MigrationRecord) -> None:
    """Kill the hook a dead agent left running (its group: it ran in a session of its own)."""
    if rec.pid is None:
        return
    leader = procfs.is_running(rec.pid, rec.proc_start)
    for member in procfs.group_members(rec.pid):
        # without its leader the group id could be anyone's: only the hook's own processes
        if leader or procfs.environ(member.pid).get(MIGRATION_VAR) == rec.result.id:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, signal.SIGKILL)
                log.warning(
                    "killed a migrate hook left by a previous agent",
                    extra={"pid": member.pid, "migration": rec.result.id},
                )


def _migration_env(env: Mapping[str, str], request: MigrateRequest) -> dict[str, str]:
    """The instance's environment, with the migration's id and its PostgreSQL timeouts."""
    extra = {MIGRATION_VAR: request.id}
    if request.pg_options:
        # ours first, the app's own after: libpq's last setting of an option wins, theirs
        extra["PGOPTIONS"] = " ".join(o for o in (request.pg_options, env.get("PGOPTIONS")) if o)
    return dict(env) | extra
