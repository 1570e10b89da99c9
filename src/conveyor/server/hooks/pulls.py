"""What every provider's pull/merge request webhook shares: dedupe, and queueing a test run."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.forge.pulls import PullEvent
from conveyor.pipeline.runs import enqueue_run
from conveyor.server.hooks.common import accepted
from conveyor.store.models import App, PullRequestRun, WebhookDelivery

log = logging.getLogger("conveyor.hooks")


def handle_pull(
    request: Request,
    session: Session,
    app: App,
    *,
    provider: str,
    delivery: str,
    pull: PullEvent | str,
) -> JSONResponse:
    """Record the delivery, then queue a test-only run of the request's head."""
    record = WebhookDelivery(provider=provider, delivery_id=delivery[:255], app_id=app.id)
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return accepted(
            "duplicate", f"delivery {delivery[:255]} was already received; nothing to do"
        )
    if isinstance(pull, str):
        session.commit()
        return accepted("ignored", pull)
    run = enqueue_run(
        session,
        app,
        pull.head_sha,
        ref=pull.head_ref,
        trigger=pull.forge,
        triggered_by=pull.author,
    )
    session.add(
        PullRequestRun(
            run_id=run.id,
            forge=pull.forge,
            project=pull.project,
            number=pull.number,
            title=pull.title,
            url=pull.url,
            head_sha=pull.head_sha,
            head_ref=pull.head_ref,
            merge_ref=pull.merge_ref,
        )
    )
    record.run_id = run.id
    session.commit()
    request.app.state.engine.wake()
    request.app.state.reporter.wake()
    log.info(
        "pull request queued a test run",
        extra={"provider": pull.forge, "app": app.name, "run": run.id, "number": pull.number},
    )
    return accepted(
        "queued",
        f"run {run.id} queued: the tests of pull request {pull.number} at {pull.head_sha[:7]}",
        run.id,
    )
