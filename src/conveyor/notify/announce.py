"""Queueing notifications: one row per target, in the transaction of the change announced.

The engines call the Announcer where a run or a deployment ends, or where a
deployment starts waiting for an approval, inside the session that records that
change: the rows commit with it, so a crash loses no message and a rollback of
the change writes none. Delivery is the Courier's business (delivery.py);
nothing here does network I/O or may fail the caller's transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, object_session

from conveyor.config import Config, ConfigError, HostsCommand, Notify, load_config
from conveyor.notify.announcements import KIND as ANNOUNCE
from conveyor.notify.announcements import (
    Measured,
    OutcomeFacts,
    Plan,
    StartFacts,
    announce_recipients,
)
from conveyor.notify.announcements import after as announce_after
from conveyor.notify.announcements import before as announce_before
from conveyor.notify.commits import commits_since
from conveyor.notify.messages import (
    DeploymentFacts,
    FlagStopFacts,
    Message,
    RollbackFacts,
    RunFacts,
    approval_needed,
    deployment_ended,
    flag_stopped,
    recipients,
    run_failed,
)
from conveyor.pipeline.masking import Masker
from conveyor.pipeline.records import Paths
from conveyor.store.models import App, Deployment, Notification, Release, Run
from conveyor.store.secrets import every_value
from conveyor.store.serving import serving_release

log = logging.getLogger("conveyor.notify")

CONFIG_FILE = "conveyor.yml"
LOG_TAIL_LINES = 10
LOG_TAIL_WIDTH = 200


class Announcer:
    """Turns the end of a run or deployment, or an approval gate, into pending notifications."""

    def __init__(
        self,
        public_url: str,
        data_dir: Path,
        workspace: Callable[[int], Path],
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.data = data_dir
        self.workspace = workspace
        # called after the commit that holds new rows (the Courier's wake)
        self.on_queued: Callable[[], None] | None = None

    # -- hook points ----------------------------------------------------------

    def deployment_ended(self, d: Deployment) -> None:
        """A deployment reached its end state (in the session that records it)."""
        self._guarded(self._deployment_ended, d, deployment=d.id)

    def deployment_waiting(self, d: Deployment) -> None:
        """A deployment is waiting: announces it once if what it waits for is an approval."""
        self._guarded(self._deployment_waiting, d, deployment=d.id)

    def deployment_starting(self, d: Deployment) -> None:
        """A deployment is about to move traffic (in the session that starts it): announced
        when its environment's `announce:` lists before."""
        self._guarded(self._deployment_starting, d, deployment=d.id)

    def deployment_measured(
        self,
        d: Deployment,
        source: str,
        before: Measured | None,
        after: Measured | None,
        error: str | None,
    ) -> None:
        """A deployment ended and its releases were measured: announced when its
        environment's `announce:` lists after."""
        self._guarded(self._deployment_measured, d, source, before, after, error, deployment=d.id)

    def run_ended(self, session: Session, run: Run) -> None:
        """A run reached its end state (in the session that records it)."""
        self._guarded(self._run_ended, session, run, run=run.id)

    def flag_stopped(self, session: Session, app: App, rollout_id: int, f: FlagStopFacts) -> None:
        """A guarded rollout's flag was turned off by the judge (in the session that
        records it); the link and the release serving are filled in here."""
        self._guarded(self._flag_stopped, session, app, rollout_id, f, rollout=rollout_id)

    def queue(self, d: Deployment, key: str, message: Message) -> None:
        """Any other message about a deployment (a failed teardown of its environment),
        to the targets its release's config names for the message's kinds, once per key."""

        def queue() -> None:
            session = _session_of(d)
            self._queue(session, d.app, key, message, _deployment_config(session, d), deployment=d)

        self._guarded(queue, deployment=d.id)

    # -- what to say ------------------------------------------------------------

    def _flag_stopped(self, session: Session, app: App, rollout_id: int, f: FlagStopFacts) -> None:
        config = _latest_config(session, app.id)
        release = serving_release(session, app.id, f.environment)
        row = session.get(Release, release) if release is not None else None
        link = f"{self.public_url}/apps/{app.name}/environments/{f.environment}/flags"
        facts = replace(f, link=link, release=release, sha=row.sha if row else None)
        self._queue(session, app, f"flag-rollout:{rollout_id}:stop", flag_stopped(facts), config)

    def _deployment_ended(self, d: Deployment) -> None:
        session = _session_of(d)
        config = _deployment_config(session, d)
        message = deployment_ended(self._deployment_facts(session, d, config))
        if message is not None:
            self._queue(session, d.app, f"deployment:{d.id}:end", message, config, deployment=d)

    def _deployment_waiting(self, d: Deployment) -> None:
        session = _session_of(d)
        if d.kind != "deploy" or d.approved_by is not None:
            return
        config = _deployment_config(session, d)
        env = config.environments.get(d.environment) if config else None
        if env is None or env.approval != "required":
            return
        facts = self._deployment_facts(session, d, config)
        message = approval_needed(facts)
        self._queue(session, d.app, f"deployment:{d.id}:approval", message, config, deployment=d)

    def _deployment_starting(self, d: Deployment) -> None:
        session = _session_of(d)
        config = _deployment_config(session, d)
        env = config.environments.get(d.environment) if config else None
        if d.kind != "deploy" or env is None or "before" not in env.announce:
            return
        hosts = list(json.loads(d.previous or "{}"))
        previous = session.get(Release, d.previous_release) if d.previous_release else None
        commits = (
            commits_since(Paths(self.data).mirror(d.app.name), previous.sha, d.release.sha)
            if previous is not None
            else ()
        )
        plan = Plan(
            strategy=env.strategy,
            steps=tuple(env.steps),
            step_pause=env.step_pause,
            batch=env.batch.size(len(hosts)) if hosts else 1,
            monitor=env.monitor.duration,
        )
        facts = StartFacts(
            id=d.id,
            app=d.app.name,
            environment=d.environment,
            release=d.release_id,
            sha=d.release.sha,
            link=f"{self.public_url}/deployments/{d.id}",
            hosts=hosts,
            plan=plan,
            previous_release=d.previous_release,
            commits=commits,
            history=_took(session, d),
            keep_warm=config.service.keep_warm if config and config.service else 0.0,
        )
        key = f"deployment:{d.id}:before"
        self._queue(session, d.app, key, announce_before(facts), config, deployment=d)

    def _deployment_measured(
        self,
        d: Deployment,
        source: str,
        before: Measured | None,
        after: Measured | None,
        error: str | None,
    ) -> None:
        session = _session_of(d)
        config = _deployment_config(session, d)
        env = config.environments.get(d.environment) if config else None
        if d.kind != "deploy" or env is None or "after" not in env.announce:
            return
        took = (
            (d.finished_at - d.started_at).total_seconds()
            if d.started_at and d.finished_at
            else None
        )
        facts = OutcomeFacts(
            id=d.id,
            app=d.app.name,
            environment=d.environment,
            release=d.release_id,
            sha=d.release.sha,
            link=f"{self.public_url}/deployments/{d.id}",
            hosts=json.loads(d.touched),
            previous_release=d.previous_release,
            source=source,
            before=before,
            after=after,
            took=took,
            error=error,
        )
        key = f"deployment:{d.id}:after"
        self._queue(session, d.app, key, announce_after(facts), config, deployment=d)

    def _run_ended(self, session: Session, run: Run) -> None:
        if run.state != "failed":
            return  # cancelled and superseded runs are a person's or a newer commit's doing
        config = self._run_config(session, run)
        app = run.app
        steps = [s for s in run.steps if s.attempt == run.attempt]
        failed = next((s for s in steps if s.state in ("failed", "cancelled", "interrupted")), None)
        step_name: str | None = None
        tail: list[str] = []
        if failed is not None:
            step_name = (
                f"{failed.kind} step {failed.name!r}"
                if failed.kind in ("test", "build")
                else failed.kind
            )
            tail = self._log_tail(failed.log_path)
        facts = RunFacts(
            id=run.id,
            app=app.name,
            sha=run.sha,
            link=f"{self.public_url}/runs/{run.id}",
            state=run.state,
            reason=run.reason,
            ref=run.ref,
            failed_step=step_name,
            release=run.release_id,
            log_tail=tail,
            trigger=run.trigger,
            triggered_by=run.triggered_by,
        )
        key = f"run:{run.id}:{run.attempt}:end"
        self._queue(session, app, key, run_failed(facts), config, run=run)

    def _deployment_facts(
        self, session: Session, d: Deployment, config: Config | None
    ) -> DeploymentFacts:
        env = config.environments.get(d.environment) if config else None
        hosts: list[str] = json.loads(d.touched) or list(json.loads(d.previous or "{}"))
        inventory: str | None = None
        if not hosts and env is not None:
            if isinstance(env.hosts, HostsCommand):
                inventory = env.hosts.command
            else:
                hosts = list(env.hosts)
        failed = next((s for s in d.steps if s.state == "failed" and s.kind != "rollback"), None)
        back = next((s for s in reversed(d.steps) if s.kind == "rollback"), None)
        rollback = (
            RollbackFacts(
                state=back.state,
                hosts=list(json.loads(back.targets)),
                to=d.previous_release,
                reason=back.reason,
            )
            if back is not None
            else None
        )
        previous = d.previous_release
        if previous is None and d.state in ("queued", "waiting"):
            previous = serving_release(session, d.app_id, d.environment)
        return DeploymentFacts(
            id=d.id,
            app=d.app.name,
            environment=d.environment,
            kind=d.kind,
            state=d.state,
            release=d.release_id,
            sha=d.release.sha,
            link=f"{self.public_url}/deployments/{d.id}",
            hosts=hosts,
            inventory=inventory,
            strategy=d.strategy,
            previous_release=previous,
            reason=d.reason,
            failed_step=failed.name if failed is not None else None,
            rollback=rollback,
            run=d.run_id,
            trigger=d.trigger,
            triggered_by=d.triggered_by,
        )

    # -- where to send it -------------------------------------------------------

    def _run_config(self, session: Session, run: Run) -> Config | None:
        """The run's conveyor.yml: its release's, else its checkout's, else the app's last."""
        if run.release_id is not None:
            release = session.get(Release, run.release_id)
            if release is not None and (config := _parse(release.config)) is not None:
                return config
        try:
            return load_config(self.workspace(run.id) / CONFIG_FILE)
        except (ConfigError, OSError):
            # an invalid or missing conveyor.yml is itself the failure: tell whom the app
            # told last time
            return _latest_config(session, run.app_id)

    def _queue(
        self,
        session: Session,
        app: App,
        key: str,
        message: Message,
        config: Config | None,
        *,
        run: Run | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        targets: Sequence[Notify] = config.notify if config is not None else ()
        urls = (
            announce_recipients(targets)
            if message.kinds == ANNOUNCE
            else recipients(targets, message.kinds)
        )
        if not urls:
            return
        already = set(session.scalars(select(Notification.target).where(Notification.key == key)))
        mask = Masker(every_value(session, app))
        title, body = mask(message.title), mask(message.body)
        fresh = [u for u in urls if u not in already]
        for url in fresh:
            session.add(
                Notification(
                    app_id=app.id,
                    key=key,
                    event=message.event,
                    run_id=run.id if run is not None else deployment.run_id if deployment else None,
                    deployment_id=deployment.id if deployment is not None else None,
                    target=url,
                    title=title,
                    body=body,
                )
            )
        if fresh:
            log.info(
                "notification queued",
                extra={"key": key, "event": message.event, "targets": len(fresh)},
            )
            if self.on_queued is not None:
                event.listen(session, "after_commit", _after_commit(self.on_queued), once=True)

    def _log_tail(self, log_path: str | None) -> list[str]:
        """The last lines of a step's log (masked when written; masked again when sent)."""
        if not log_path:
            return []
        try:
            with open(self.data / log_path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        return [_clip(line) for line in lines[-LOG_TAIL_LINES:]]

    def _guarded(self, fn: Callable[..., None], *args: Any, **where: Any) -> None:
        # a message is never worth a failed deployment: log it and carry on
        try:
            fn(*args)
        except Exception:
            log.exception("could not queue a notification", extra=where)


def _took(session: Session, d: Deployment, last: int = 5) -> list[float]:
    """Seconds the last successful deployments of this environment took."""
    rows = session.scalars(
        select(Deployment)
        .where(
            Deployment.app_id == d.app_id,
            Deployment.environment == d.environment,
            Deployment.kind == "deploy",
            Deployment.state == "succeeded",
            Deployment.id != d.id,
        )
        .order_by(Deployment.id.desc())
        .limit(last)
    )
    return [
        (r.finished_at - r.started_at).total_seconds()
        for r in rows
        if r.started_at is not None and r.finished_at is not None
    ]


def _session_of(row: object) -> Session:
    session = object_session(row)
    if session is None:
        raise RuntimeError("the row to announce is not in a session")
    return session


def _after_commit(wake: Callable[[], None]) -> Callable[[Session], None]:
    def fire(_session: Session) -> None:
        wake()

    return fire


def _deployment_config(session: Session, d: Deployment) -> Config | None:
    return _parse(d.release.config) or _latest_config(session, d.app_id)


def _latest_config(session: Session, app_id: int) -> Config | None:
    releases = session.scalars(
        select(Release)
        .where(Release.app_id == app_id, Release.config.is_not(None))
        .order_by(Release.created_at.desc())
        .limit(5)
    )
    for release in releases:
        if (config := _parse(release.config)) is not None:
            return config
    return None


def _parse(text: str | None) -> Config | None:
    if not text:
        return None
    try:
        return Config.model_validate_json(text)
    except ValueError:
        return None


def _clip(line: str) -> str:
    return line if len(line) <= LOG_TAIL_WIDTH else line[: LOG_TAIL_WIDTH - 1] + "…"
