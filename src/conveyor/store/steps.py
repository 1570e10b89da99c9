"""A deployment step's detail and log, changed in one SQL statement each.

The engine and the API (a person pausing or promoting a canary step) both write
to a running step; a read-modify-write of the whole JSON by one could undo the
other's change. Each write here sets only its own keys, or appends its lines,
inside the database: with SQLite's JSON functions, or PostgreSQL's jsonb (the
columns are text on both, so one schema serves either engine).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from conveyor.store.models import DeploymentStep

LOG_KEEP = 64000  # characters of a step's log kept (its end)


def set_detail(session: Session, step_id: int, values: dict[str, Any]) -> None:
    """Set top-level keys of the step's detail (JSON), leaving the others as they are."""
    if not values:
        return
    detail: Any
    if _postgresql(session):
        # jsonb's || replaces the top-level keys on its right and keeps the others
        patch = cast(literal(json.dumps(values)), JSONB)
        detail = cast(cast(DeploymentStep.detail, JSONB).op("||")(patch), Text)
    else:
        args: list[Any] = []
        for key, value in values.items():
            args += [f"$.{key}", func.json(json.dumps(value))]
        detail = func.json_set(DeploymentStep.detail, *args)
    session.execute(
        update(DeploymentStep)
        .where(DeploymentStep.id == step_id)
        .values(detail=detail)
        .execution_options(synchronize_session=False)
    )


def append_log(session: Session, step_id: int, lines: list[str]) -> None:
    """Add stamped lines to the end of the step's log, keeping its last LOG_KEEP characters."""
    if not lines:
        return
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    text = "".join(f"{stamp} {line}\n" for line in lines)
    longer = DeploymentStep.log + text
    # PostgreSQL's substr does not count from the end: its right() does (SQLite has none)
    kept = func.right(longer, LOG_KEEP) if _postgresql(session) else func.substr(longer, -LOG_KEEP)
    session.execute(
        update(DeploymentStep)
        .where(DeploymentStep.id == step_id)
        .values(log=kept)
        .execution_options(synchronize_session=False)
    )


def control_actions(session: Session, deployment_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """People's requests on each deployment's steps (pause, promote …), in their order.

    Read inside the database (SQLite's json_extract, PostgreSQL's jsonb): a step's detail
    also holds its chart points, too many to parse here for a page of deployments.
    """
    if not deployment_ids:
        return {}
    requested: Any
    if _postgresql(session):
        as_json = cast(DeploymentStep.detail, JSONB)
        requested = func.jsonb_extract_path_text(as_json, "control", "actions")
    else:
        requested = func.json_extract(DeploymentStep.detail, "$.control.actions")
    rows = session.execute(
        select(DeploymentStep.deployment_id, requested)
        .where(DeploymentStep.deployment_id.in_(deployment_ids))
        .order_by(DeploymentStep.deployment_id, DeploymentStep.position)
    ).all()
    out: dict[int, list[dict[str, Any]]] = {}
    for deployment_id, actions in rows:
        if actions:
            out.setdefault(deployment_id, []).extend(json.loads(actions))
    return out


def _postgresql(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"
