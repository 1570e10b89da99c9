"""What an environment's record says it serves: a query shared by the engine and notify."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.store.models import Deployment


def serving_release(session: Session, app_id: int, env: str) -> str | None:
    """The release the environment's record says serves it: the last one to finish in place."""
    last = session.scalar(
        select(Deployment)
        .where(
            Deployment.app_id == app_id,
            Deployment.environment == env,
            Deployment.state == "succeeded",
        )
        .order_by(Deployment.finished_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    return last.release_id if last else None
