"""A deployment step's detail and log, changed in one SQL statement each.

The engine and the API (a person pausing or promoting a canary step) both write
to a running step; a read-modify-write of the whole JSON by one could undo the
other's change. Each write here sets only its own keys, or appends its lines,
inside the database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from conveyor.store.models import DeploymentStep

LOG_KEEP = 64000  # characters of a step's log kept (its end)


def set_detail(session: Session, step_id: int, values: dict[str, Any]) -> None:
    """Set top-level keys of the step's detail (JSON), leaving the others as they are."""
    if not values:
        return
    args: list[Any] = []
    for key, value in values.items():
        args += [f"$.{key}", func.json(json.dumps(value))]
    session.execute(
        update(DeploymentStep)
        .where(DeploymentStep.id == step_id)
        .values(detail=func.json_set(DeploymentStep.detail, *args))
        .execution_options(synchronize_session=False)
    )


def append_log(session: Session, step_id: int, lines: list[str]) -> None:
    """Add stamped lines to the end of the step's log, keeping its last LOG_KEEP characters."""
    if not lines:
        return
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    text = "".join(f"{stamp} {line}\n" for line in lines)
    session.execute(
        update(DeploymentStep)
        .where(DeploymentStep.id == step_id)
        .values(log=func.substr(DeploymentStep.log + text, -LOG_KEEP))
        .execution_options(synchronize_session=False)
    )


def control_actions(session: Session, deployment_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """People's requests on each deployment's steps (pause, promote …), in their order.

    Read with SQLite's json_extract: a step's detail also holds its chart points, too
    many to parse for a page of deployments.
    """
    if not deployment_ids:
        return {}
    rows = session.execute(
        select(
            DeploymentStep.deployment_id,
            func.json_extract(DeploymentStep.detail, "$.control.actions"),
        )
        .where(DeploymentStep.deployment_id.in_(deployment_ids))
        .order_by(DeploymentStep.deployment_id, DeploymentStep.position)
    ).all()
    out: dict[int, list[dict[str, Any]]] = {}
    for deployment_id, actions in rows:
        if actions:
            out.setdefault(deployment_id, []).extend(json.loads(actions))
    return out
