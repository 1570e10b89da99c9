"""What a deployment step records (`DeploymentStep.detail`): one typed definition.

The engine, the API and the pages read a step's detail through `StepDetail`
(`read_detail(step)`), and write it key by key through `write_detail`, which keeps
store/steps.py's single-statement `json_set`: a person's pause or promote and the
engine's next look never overwrite each other's keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from conveyor.analysis.judge import JudgeState
from conveyor.protocol import ControlAction, Judgement, ReleaseCounters, SeriesPoint, StepControl
from conveyor.store import steps
from conveyor.store.models import DeploymentStep


class StepOptions(BaseModel):
    """How the plan asked the step to run (deploy/plan.py's `PlannedStep.options`)."""

    model_config = ConfigDict(extra="ignore")

    checks: bool = False  # run the environment's HTTP checks once the hosts converged
    preview: bool = False  # ... through the preview header (blue-green)
    pause: float = 0.0  # seconds watched once converged (a canary step, the watch window)
    analyse: bool = False  # the judge looks at the release's counters during the pause
    holdback_max: int = 0  # a watch window: the most its holdback is raised to as it begins


class SeriesStart(BaseModel):
    """Both releases' counters at the step's first look: what its chart counts from."""

    model_config = ConfigDict(extra="ignore")

    canary: ReleaseCounters | None = None
    baseline: ReleaseCounters | None = None


class TrafficWaitRecord(BaseModel):
    """What a canary step waiting for traffic shows: requests needed, until when, where."""

    model_config = ConfigDict(extra="ignore")

    needed: int
    until: float  # unix time
    urls: list[str] = []


class StepDetail(BaseModel):
    """Every key a step's detail may hold; absent keys read as their defaults."""

    model_config = ConfigDict(extra="ignore")

    options: StepOptions = StepOptions()
    generations: dict[str, int] = {}  # per host: the generation the step wrote for it
    final: Literal["failed", "cancelled"] | None = None  # a rollback step: how it ends
    checked: bool = False  # the step's HTTP checks passed
    watch_from: float | None = None  # unix time the hosts converged and the watch began
    control: StepControl | None = None  # what people asked: pause, resume, promote
    judge: JudgeState | None = None  # the judge's memory, carried to the next step
    judgement: Judgement | None = None  # the judge's last word
    source_error: str | None = None  # the metric source's last failure (logged once)
    traffic_wait: TrafficWaitRecord | None = None
    series: list[SeriesPoint] = []  # chart points
    series_at: float | None = None  # unix time of the last point
    series_start: SeriesStart | None = None
    # the deployment's first step: the previous release's counters on the environment's
    # hosts when the deployment began, from which the judge's reference window counts
    reference: ReleaseCounters | None = None
    reference_at: float | None = None  # unix time it was read (or tried: None stays None)


FIELDS = frozenset(StepDetail.model_fields)


def read_detail(step: DeploymentStep) -> StepDetail:
    return StepDetail.model_validate_json(step.detail or "{}")


def dump_fields(**values: Any) -> dict[str, Any]:
    """The JSON of some of a step's keys, each checked against its type in StepDetail."""
    unknown = set(values) - FIELDS
    if unknown:
        raise KeyError(f"not a key of a step's detail: {', '.join(sorted(unknown))}")
    typed = StepDetail.model_validate(values)
    return typed.model_dump(mode="json", include=set(values))


def write_detail(session: Session, step_id: int, **values: Any) -> None:
    """Set these keys of the step's detail in one statement, leaving the others alone."""
    steps.set_detail(session, step_id, dump_fields(**values))


def control_actions(session: Session, deployment_ids: list[int]) -> dict[int, list[ControlAction]]:
    """People's requests on each deployment's steps (`control.actions`), in their order."""
    found = steps.control_actions(session, deployment_ids)
    return {d: [ControlAction.model_validate(a) for a in actions] for d, actions in found.items()}
