"""The Reporter: posts each pull-request run's commit status to its forge, as the run goes.

A reconciler: it compares the status a run should show (statuses.desired) with the one
its forge last got (PullRequestRun.reported), and posts what is missing, in order. Every
attempt is a CommitStatus row, so a refused token is recorded, logged and shown with the
run, and never fails the run itself. A server killed mid-post posts again at its next
start (a forge keeps the newest status per context, so a repeat is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from conveyor.forge.statuses import (
    DEFAULT_API,
    FINAL,
    TOKEN_SECRET,
    describe,
    desired,
    next_posts,
    refusal,
    status_request,
    verdict,
)
from conveyor.store.models import CommitStatus, PullRequestRun, Run, utcnow
from conveyor.store.outage import OUTAGE
from conveyor.store.secrets import SecretStoreError, secret_values
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.forge")

RETRY_ENV = "CONVEYOR_FORGE_RETRY"  # seconds between attempts, e.g. "1,3,10"
BACKOFF = (1.0, 3.0, 10.0)
TIMEOUT = 10.0
POLL = 1.0


@dataclass(frozen=True)
class Job:
    """One status to post, with what posting it needs."""

    run_id: int
    app: str
    forge: str
    project: str
    sha: str
    kind: str
    description: str
    api: str | None
    token: str | None


def context_of(app: str) -> str:
    """The status's context (GitLab: name): one per app, so a monorepo's apps differ."""
    return f"conveyor/{app}"


def backoff(environ: dict[str, str] | None = None) -> tuple[float, ...]:
    raw = (environ if environ is not None else dict(os.environ)).get(RETRY_ENV)
    if raw is None:
        return BACKOFF
    try:
        return tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        log.warning("ignoring a malformed forge retry policy", extra={RETRY_ENV: raw})
        return BACKOFF


class Reporter:
    """Posts commit statuses of pull-request runs, one at a time, retrying with backoff."""

    def __init__(self, sessions: sessionmaker[Session], public_url: str) -> None:
        self.sessions = sessions
        self.public_url = public_url.rstrip("/")
        self.backoff = backoff()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    def wake(self) -> None:
        """Look at the runs now (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await in_thread(self._interrupted)
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            while not self._stopping:
                try:
                    for job in await in_thread(self._due):
                        if self._stopping:
                            break
                        await self._post(client, job)
                    away = None
                except Exception as exc:
                    away = OUTAGE.turn_failed(exc, "commit status reporter")
                    if away is None:
                        log.exception("commit status reporter error")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(away or 0, POLL))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # -- records ----------------------------------------------------------------

    def _interrupted(self) -> None:
        """Posts a killed server left underway: recorded as such (they are posted again)."""
        with self.sessions() as session:
            session.execute(
                update(CommitStatus)
                .where(CommitStatus.outcome == "sending")
                .values(outcome="failed", error="interrupted: the server stopped during the post")
            )
            session.commit()

    def _due(self) -> list[Job]:
        """The statuses to post now, in order, for every run not yet finally reported."""
        jobs: list[Job] = []
        with self.sessions() as session:
            rows = session.execute(
                select(PullRequestRun, Run)
                .join(Run, Run.id == PullRequestRun.run_id)
                .where(PullRequestRun.done.is_(False))
                .order_by(PullRequestRun.run_id)
            ).all()
            for pull, run in rows:
                want = desired(run.state)
                posts = next_posts(pull.forge, pull.reported, want)
                if not posts:
                    if want in FINAL:
                        pull.done = True
                    continue
                api, token = self._credentials(session, run, pull.forge)
                jobs += [
                    Job(
                        run_id=run.id,
                        app=run.app.name,
                        forge=pull.forge,
                        project=pull.project,
                        sha=pull.head_sha,
                        kind=kind,
                        description=describe(kind, run.reason),
                        api=api,
                        token=token,
                    )
                    for kind in posts
                ]
            session.commit()
        return jobs

    def _credentials(self, session: Session, run: Run, forge: str) -> tuple[str | None, str | None]:
        api = run.app.forge_api or DEFAULT_API.get(forge)
        try:
            token = secret_values(session, run.app, None).get(TOKEN_SECRET)
        except SecretStoreError:
            token = None
        return api, token

    def _begin(self, job: Job, target_url: str) -> int:
        with self.sessions() as session:
            row = CommitStatus(
                run_id=job.run_id,
                state=job.kind,
                description=job.description,
                target_url=target_url,
            )
            session.add(row)
            session.commit()
            return row.id

    def _attempted(self, row_id: int) -> None:
        with self.sessions() as session:
            row = session.get_one(CommitStatus, row_id)
            row.attempts += 1
            session.commit()

    def _end(
        self, job: Job, row_id: int, outcome: str, http_status: int | None, error: str | None
    ) -> None:
        with self.sessions() as session:
            row = session.get_one(CommitStatus, row_id)
            row.outcome = outcome
            row.http_status = http_status
            row.error = error
            row.finished_at = utcnow()
            pull = session.get(PullRequestRun, job.run_id)
            if pull is not None:
                # given up on counts as handled: the next status is still posted after it
                pull.reported = job.kind
                pull.done = job.kind in FINAL
            session.commit()

    # -- posting ----------------------------------------------------------------

    async def _post(self, client: httpx.AsyncClient, job: Job) -> None:
        target_url = f"{self.public_url}/runs/{job.run_id}"
        row_id = await in_thread(self._begin, job, target_url)
        missing = self._missing(job)
        if missing is not None:
            await self._give_up(job, row_id, None, missing)
            return
        assert job.api is not None and job.token is not None
        request = status_request(
            job.forge,
            job.api,
            job.project,
            job.sha,
            job.token,
            job.kind,
            description=job.description,
            target_url=target_url,
            context=context_of(job.app),
        )
        waits = iter(self.backoff)
        while True:
            await in_thread(self._attempted, row_id)
            status, detail = await _send(client, request.url, request.headers, request.body)
            what = verdict(status)
            if what == "sent":
                await in_thread(self._end, job, row_id, "sent", status, None)
                log.info(
                    "commit status posted",
                    extra={"run": job.run_id, "forge": job.forge, "state": job.kind},
                )
                return
            wait = next(waits, None)
            if what == "refused" or wait is None or self._stopping:
                error = (
                    refusal(job.forge, status, detail, job.app)
                    if status is not None
                    else f"{job.forge} API at {job.api} unreachable: {detail}"
                )
                await self._give_up(job, row_id, status, error)
                return
            await asyncio.sleep(wait)

    def _missing(self, job: Job) -> str | None:
        if job.api is None:
            return (
                f"no {job.forge} API URL for app {job.app}: set it with "
                f"`conveyor app set {job.app} --forge-api URL`"
            )
        if not job.token:
            return (
                f"no {TOKEN_SECRET} secret for app {job.app}: set the forge's token with "
                f"`conveyor secret set {job.app} {TOKEN_SECRET}`"
            )
        return None

    async def _give_up(self, job: Job, row_id: int, status: int | None, error: str) -> None:
        await in_thread(self._end, job, row_id, "failed", status, error)
        log.error(
            "commit status not posted",
            extra={"run": job.run_id, "forge": job.forge, "state": job.kind, "error": error},
        )


async def _send(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, object]
) -> tuple[int | None, str]:
    """POST once: the HTTP status (None when no answer came) and a short detail."""
    try:
        response = await client.post(url, headers=headers, json=body)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    detail = response.text.strip().replace("\n", " ")[:300]
    return response.status_code, detail
