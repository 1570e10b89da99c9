"""The runner's loop: claim a run (long-poll), carry it out, claim the next."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.logs import setup_logging
from conveyor.pipeline.process import (
    STEP_MARKER,
    kill_processes,
    processes_whose_env,
    step_marker,
)
from conveyor.protocol.runners import CLAIM_WAIT, RunnerJob
from conveyor.runner.job import Job
from conveyor.runner.link import Link, Unreachable

log = logging.getLogger("conveyor.runner")

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds between claims while the server fails


class Runner:
    """Claims runs whose labels it has, one at a time."""

    def __init__(self, link: Link, name: str, labels: Sequence[str], work: Path) -> None:
        self.link = link
        self.name = name
        self.labels = sorted(set(labels))
        self.work = work
        self.stopping = asyncio.Event()
        self.current: Job | None = None

    async def serve(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        stop_leftovers(self.work)
        log.info("runner started", extra={"runner": self.name, "labels": self.labels})
        pause = BACKOFF_FIRST
        while not self.stopping.is_set():
            try:
                job = await self._claim()
            except Unreachable as exc:
                log.warning("no server answers", extra={"error": str(exc)})
                job = None
            except PermissionError as exc:
                log.error("refused by the server", extra={"error": str(exc)})
                return 1
            except Exception:
                log.exception("claim failed")
                await self._pause(pause)
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            pause = BACKOFF_FIRST
            if job is None:
                continue
            log.info("run claimed", extra={"run": job.run, "attempt": job.attempt})
            self.current = Job(self.link, self.name, job, self.work)
            try:
                await self.current.carry_out()
            except Exception:  # the server retries it once its heartbeat stops
                log.exception("run broke off", extra={"run": job.run})
            finally:
                self.current = None
        return 0

    async def _claim(self) -> RunnerJob | None:
        body = {"name": self.name, "labels": self.labels, "wait": CLAIM_WAIT}
        response = await self.link.request(
            "POST", "/api/runner/claim", json=body, timeout=CLAIM_WAIT + 30
        )
        if response.status_code == 204:
            return None
        if response.status_code in (401, 403):
            raise PermissionError(
                f"{response.status_code} {response.text}: give a token with the runner role "
                "(`conveyor token create NAME --role runner`)"
            )
        response.raise_for_status()
        return RunnerJob.model_validate(response.json())

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Stop claiming; the step underway is stopped (the server retries its run)."""
        self.stopping.set()
        if self.current is not None:
            self.current.lost.set()


def stop_leftovers(work: Path) -> None:
    """Kill the step processes a killed runner on this work directory left running."""
    prefix = f"{STEP_MARKER}={_marker_key(work)}-".encode()
    found = processes_whose_env(lambda env: any(item.startswith(prefix) for item in env))
    if found:
        log.warning("stopping steps a previous runner left running", extra={"pids": found})
        kill_processes(found)


def _marker_key(work: Path) -> str:
    return step_marker(work, 0).rsplit("-", 1)[0]  # the work directory's part of the marker


def run_runner(
    servers: Sequence[str],
    token: str,
    name: str,
    labels: Sequence[str],
    work: Path,
    verify: Any,
    bind: str | None = None,
) -> int:
    """`conveyor runner`: serve until SIGTERM or SIGINT; the exit code."""
    setup_logging()

    async def main() -> int:
        link = Link(servers, token, verify=verify, bind=bind)
        runner = Runner(link, name, labels, work)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        serving = asyncio.create_task(runner.serve())
        stopping = asyncio.create_task(runner.stopping.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done() and runner.current is None:
                serving.cancel()  # waiting in a claim: nothing to finish
            with contextlib.suppress(asyncio.CancelledError):
                return await serving
            return 0
        finally:
            stopping.cancel()
            await link.close()

    return asyncio.run(main())
