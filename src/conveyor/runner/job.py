"""One claimed run on a runner: its source, its steps, its artifact, each reported.

The steps run as on the server (pipeline/process.py): in their own session, with the
run's timeout, their output masked line by line into a log file, which is sent to the
server as it grows. A heartbeat keeps the run this runner's; the server's 409 (the run
was aborted, or retried elsewhere after this runner stopped answering) stops the step
and the job at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx

from conveyor.pipeline.masking import Masker
from conveyor.pipeline.process import (
    SHELL,
    STEP_MARKER,
    lint_command,
    run_step,
    step_marker,
    step_outcome,
)
from conveyor.protocol.runners import (
    ARTIFACT_HEADER,
    CLAIM_HEADER,
    HEARTBEAT_EVERY,
    ArtifactFacts,
    JobStep,
    RunnerJob,
    claim_value,
)
from conveyor.releases.artifact import BuiltArtifact, build_artifact
from conveyor.runner.link import Link
from conveyor.sqllint.sources import SQL_DIGEST_ENV

log = logging.getLogger("conveyor.runner")

LOG_PUSH_EVERY = 0.5  # seconds between two sends of a step's new log lines
LOG_CHUNK = 256 * 1024


class Lost(Exception):
    """The server says the run is no longer this runner's: stop, report nothing more."""


class Job:
    """A claimed run, carried out in `work`/run-<id>."""

    def __init__(self, link: Link, runner: str, job: RunnerJob, work: Path) -> None:
        self.link = link
        self.runner = runner
        self.job = job
        self.work = work
        self.workspace = work / f"run-{job.run}"
        self.logs = work / "logs"
        self.masker = Masker(job.mask)
        self.headers = {CLAIM_HEADER: claim_value(runner, job.attempt)}
        self.lost = asyncio.Event()
        self._sent: dict[int, int] = {}  # bytes of each step's log sent so far

    async def carry_out(self) -> None:
        beat = asyncio.create_task(self._heartbeat())
        try:
            await self._steps()
        except Lost as exc:
            log.warning("run taken away", extra={"run": self.job.run, "detail": str(exc)})
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            shutil.rmtree(self.workspace, ignore_errors=True)
            self._sql_digest().unlink(missing_ok=True)

    # -- the server's side of it -----------------------------------------------

    async def _post(self, path: str, **kw: Any) -> httpx.Response:
        response = await self.link.request("POST", path, headers=self.headers, **kw)
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        if response.status_code in (404, 409):  # gone (its app removed) or no longer ours
            self.lost.set()
            raise Lost(_detail(response))
        if response.status_code >= 400:
            raise RuntimeError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {_detail(response)}"
            )

    async def _heartbeat(self) -> None:
        path = f"/api/runner/runs/{self.job.run}/heartbeat"
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                await self._post(path)
            except Lost:
                return
            except Exception:  # the next beat tries again; the server's TTL decides
                log.exception("heartbeat failed", extra={"run": self.job.run})

    # -- the work --------------------------------------------------------------

    async def _steps(self) -> None:
        job = self.job
        await self._source()
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        base |= job.env
        for step in job.steps:
            if not await self._step(step, base):
                return
        if job.artifact_step is None:
            await self._post(f"/api/runner/runs/{job.run}/end", json={"state": "succeeded"})
            return
        await self._artifact(job.artifact_step)

    async def _source(self) -> None:
        """The run's commit, unpacked in a clean workspace."""
        shutil.rmtree(self.workspace, ignore_errors=True)
        self.workspace.mkdir(parents=True)
        archive = self.work / f"run-{self.job.run}.src.tar.gz"
        try:
            with open(archive, "wb") as out:
                path = f"/api/runner/runs/{self.job.run}/source"
                response = await self.link.stream_to(path, self.headers, out)
            self._check(response)
            await asyncio.to_thread(_unpack, archive, self.workspace)
        finally:
            archive.unlink(missing_ok=True)

    async def _step(self, step: JobStep, base: dict[str, str]) -> bool:
        """Run one step and report it; False when it did not succeed (the run is ended)."""
        job = self.job
        await self._post(f"/api/runner/steps/{step.id}/start")
        command = lint_command() if step.kind == "lint" else step.command
        env = base | step.env | {STEP_MARKER: step_marker(self.work, step.id)}
        if step.kind == "lint":
            env[SQL_DIGEST_ENV] = str(self._sql_digest())
        log_path = self.logs / f"run-{job.run}-{job.attempt}-{step.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(self.masker(f"$ {step.command}\n"), encoding="utf-8")
        push = asyncio.create_task(self._push_log(step.id, log_path))
        try:
            result = await run_step(
                [*SHELL, command],
                cwd=self.workspace,
                env=env,
                log_path=log_path,
                masker=self.masker,
                timeout=step.timeout,
                cancel=self.lost,
            )
        finally:
            push.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await push
        try:
            await self._send_log(step.id, log_path, final=True)
        finally:
            log_path.unlink(missing_ok=True)
        if self.lost.is_set():
            raise Lost(f"run {job.run} was taken away during step {step.name!r}")
        if result.ok:
            end = {"state": "succeeded", "exit_code": 0}
            await self._post(f"/api/runner/steps/{step.id}/end", json=end)
            return True
        state, reason = step_outcome(result, step.kind, step.name, step.timeout)
        end = {"state": state, "reason": reason, "exit_code": result.exit_code}
        await self._post(f"/api/runner/steps/{step.id}/end", json=end)
        await self._post(f"/api/runner/runs/{job.run}/end", json={"state": state, "reason": reason})
        return False

    async def _push_log(self, step_id: int, path: Path) -> None:
        while True:
            await asyncio.sleep(LOG_PUSH_EVERY)
            try:
                await self._send_log(step_id, path)
            except Lost:
                return
            except Exception:  # sent again with the next lines
                log.exception("log push failed", extra={"step": step_id})

    async def _send_log(self, step_id: int, path: Path, *, final: bool = False) -> None:
        """Send what the step's log gained since the last send (whole lines unless final)."""
        sent = self._sent
        offset = sent.get(step_id, 0)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(LOG_CHUNK * 4)
        except FileNotFoundError:
            return
        while data:
            chunk = data[:LOG_CHUNK]
            if not final:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    return
                chunk = chunk[:cut]
            await self._post(f"/api/runner/steps/{step_id}/log", content=chunk)
            offset += len(chunk)
            sent[step_id] = offset
            data = data[len(chunk) :]

    async def _artifact(self, step_id: int) -> None:
        job = self.job
        out = self.work / f"run-{job.run}.artifact.tar.gz"
        try:
            built = await asyncio.to_thread(
                build_artifact, self.workspace, list(job.include), list(job.exclude), out
            )
        except (OSError, ValueError) as exc:
            reason = f"artifact failed: {exc}"
            await self._post(f"/api/runner/steps/{step_id}/log", content=f"{reason}\n".encode())
            end = {"state": "failed", "reason": reason}
            await self._post(f"/api/runner/steps/{step_id}/end", json=end)
            await self._post(f"/api/runner/runs/{job.run}/end", json=end)
            return
        try:
            await self._upload(built)
        finally:
            out.unlink(missing_ok=True)

    async def _upload(self, built: BuiltArtifact) -> None:
        facts = ArtifactFacts(
            sha256=built.sha256,
            size=built.size,
            files=built.files,
            sql_digest=self._read_sql_digest(),
            migration_files=_file_hashes(self.workspace, self.job.migration_files),
        )
        headers = self.headers | {
            ARTIFACT_HEADER: facts.model_dump_json(),
            "Content-Type": "application/gzip",
        }
        path = f"/api/runner/runs/{self.job.run}/artifact"
        with open(built.path, "rb") as fh:
            data = fh.read()  # sent again as a whole if the first server does not answer
        response = await self.link.request("PUT", path, headers=headers, content=data)
        if response.status_code == 422:
            log.error("artifact refused", extra={"run": self.job.run, "detail": _detail(response)})
            return
        self._check(response)
        log.info(
            "run done",
            extra={"run": self.job.run, "release": response.json().get("release")},
        )

    def _sql_digest(self) -> Path:
        return self.work / f"run-{self.job.run}.sql-digest"

    def _read_sql_digest(self) -> str | None:
        try:
            return self._sql_digest().read_text(encoding="utf-8").strip() or None
        except OSError:
            return None


def _unpack(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")


def _file_hashes(workspace: Path, names: list[str]) -> dict[str, str | None]:
    """The sha256 of each file inside the workspace (None: absent, or outside it)."""
    root = workspace.resolve()
    out: dict[str, str | None] = {}
    for name in names:
        path = (workspace / name).resolve()
        try:
            inside = path.is_relative_to(root) and path.is_file()
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if inside else None
        except OSError:
            out[name] = None
    return out


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text
