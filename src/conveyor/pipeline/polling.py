"""The polling fallback: apps with `poll_interval` have their branch's head asked for
(`git ls-remote`) that often, and a new head queues a run, as a push would (a base of
`Engine`, for repositories no webhook reaches)."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.pipeline import git
from conveyor.pipeline.runs import enqueue_run
from conveyor.store.models import App, Run, utcnow
from conveyor.threads import Wakeup, in_thread, offloaded

log = logging.getLogger("conveyor.engine")


class RepositoryPoller:
    """Polls the repositories of apps that ask for it (a base of `Engine`)."""

    sessions: sessionmaker[Session]
    _wake: Wakeup
    _polling: set[int]  # apps whose poll is underway

    async def _poll_due(self) -> None:
        for app_id, name, url, branch in await in_thread(self._due_polls, set(self._polling)):
            self._polling.add(app_id)
            task = asyncio.create_task(self._poll(app_id, name, url, branch))
            task.add_done_callback(functools.partial(_discard, self._polling, app_id))

    def _due_polls(self, polling: set[int]) -> list[tuple[int, str, str, str]]:
        now = utcnow()
        with self.sessions() as session:
            apps = session.scalars(select(App).where(App.poll_interval.is_not(None))).all()
            return [
                (a.id, a.name, a.repo_url, a.branch)
                for a in apps
                if a.poll_interval
                and a.id not in polling
                and (
                    a.last_polled_at is None
                    or a.last_polled_at + timedelta(seconds=a.poll_interval) <= now
                )
            ]

    async def _poll(self, app_id: int, name: str, url: str, branch: str) -> None:
        try:
            head: str | None = await git.remote_head(url, branch)
        except git.GitError as exc:
            log.warning("poll failed", extra={"app": name, "error": str(exc)})
            head = None
        await self._polled(app_id, name, branch, head)
        self._wake.set()

    @offloaded
    def _polled(self, app_id: int, name: str, branch: str, head: str | None) -> None:
        """Record a poll, and queue a run for a new head."""
        with self.sessions() as session:
            app = session.get(App, app_id)
            if app is None:
                return
            app.last_polled_at = utcnow()
            if head and head != app.last_polled_sha:
                known = session.scalar(
                    select(func.count())
                    .select_from(Run)
                    .where(Run.app_id == app_id, Run.sha == head)
                )
                if not known:
                    run = enqueue_run(
                        session,
                        app,
                        head,
                        ref=f"refs/heads/{branch}",
                        trigger="poll",
                        triggered_by="poller",
                    )
                    log.info(
                        "poll found a new commit", extra={"app": name, "sha": head, "run": run.id}
                    )
                app.last_polled_sha = head
            session.commit()


def _discard(items: set[int], item: int, _task: object) -> None:
    items.discard(item)
