"""Notifications: what was sent to which target, what is pending, what failed and why."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import select

from conveyor.notify import shown_url
from conveyor.protocol import NotificationOut
from conveyor.server.auth import Viewer
from conveyor.server.deps import AppFilter, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.store.models import App, Notification

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("", responses=responses(404))
def list_notifications(
    _: Viewer,
    session: SessionDep,
    app: AppFilter = None,
    state: str | None = Query(None, pattern="^(pending|sent|failed)$"),
    limit: int = Query(50, ge=1, le=1000),
) -> list[NotificationOut]:
    """The newest notifications first."""
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if app is not None:
        query = query.where(Notification.app_id == get_app_or_404(session, app).id)
    if state is not None:
        query = query.where(Notification.state == state)
    rows = session.scalars(query).all()
    names = dict(session.execute(select(App.id, App.name)).tuples().all())
    shown: dict[str, str] = {}
    return [
        NotificationOut(
            id=n.id,
            app=names.get(n.app_id) if n.app_id is not None else None,
            event=n.event,
            kinds=n.event.split(","),
            run=n.run_id,
            deployment=n.deployment_id,
            target=shown.setdefault(n.target, shown_url(n.target)),
            title=n.title,
            body=n.body,
            state=n.state,
            attempts=n.attempts,
            last_error=n.last_error,
            created_at=n.created_at,
            next_attempt_at=n.next_attempt_at,
            sent_at=n.sent_at,
        )
        for n in rows
    ]
