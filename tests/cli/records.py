"""API records as the typed client returns them, whole, from the few fields a test sets."""

from __future__ import annotations

from typing import Any

from conveyor.protocol import (
    AppStatus,
    DeploymentOut,
    DeploymentStepOut,
    Placement,
    ReleaseOut,
    RunOut,
)

CREATED = "2026-12-05T20:53:21"


def step_out(**over: Any) -> DeploymentStepOut:
    record: dict[str, Any] = {
        "id": over.get("position", 0) + 1,
        "position": 0,
        "kind": "weight",
        "name": "a step",
        "weight": None,
        "state": "pending",
        "reason": None,
        "hosts": list(over.get("targets", {})),
        "targets": {},
        "started_at": None,
        "finished_at": None,
        "duration": None,
    }
    return DeploymentStepOut.model_validate(record | over)


def deployment_out(i: int = 7, **over: Any) -> DeploymentOut:
    record: dict[str, Any] = {
        "id": i,
        "app": "shop",
        "environment": "production",
        "release": f"abc12{i:02d}-1",
        "previous_release": "0c67dac-12",
        "run": None,
        "kind": "deploy",
        "strategy": "canary",
        "state": "succeeded",
        "reason": None,
        "trigger": "pipeline",
        "triggered_by": f"run {i}",
        "approved_by": None,
        "approved_at": None,
        "forced_by": None,
        "force_reason": None,
        "hosts": [],
        "step": None,
        "created_at": CREATED,
        "started_at": None,
        "finished_at": None,
        "duration": None,
        "steps": [],
    }
    return DeploymentOut.model_validate(record | over)


def run_out(i: int = 4, **over: Any) -> RunOut:
    record: dict[str, Any] = {
        "id": i,
        "app": "shop",
        "sha": "abc1234def",
        "ref": None,
        "trigger": "push",
        "triggered_by": "alice",
        "state": "succeeded",
        "reason": None,
        "attempt": 1,
        "release": None,
        "created_at": CREATED,
        "started_at": None,
        "finished_at": None,
        "duration": None,
    }
    return RunOut.model_validate(record | over)


def release_out(release: str) -> ReleaseOut:
    record = {"id": release, "app": "shop", "sha": "abc1234def", "run": 4, "sha256": "0" * 64}
    return ReleaseOut.model_validate(record | {"size": 1, "created_at": CREATED})


def app_status(
    *,
    hosts: list[Placement] | None = None,
    environments: list[dict[str, Any]] | None = None,
    last_run: RunOut | None = None,
    last_release: ReleaseOut | None = None,
) -> AppStatus:
    app = {"name": "shop", "repo": "/srv/shop.git", "branch": "main", "poll_interval": None}
    return AppStatus.model_validate(
        {
            "app": app | {"created_at": CREATED},
            "active_runs": [],
            "last_run": last_run,
            "last_release": last_release,
            "hosts": hosts or [],
            "environments": environments or [],
        }
    )
