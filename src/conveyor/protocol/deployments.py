"""Deployments: their steps, the judge's evidence and judgement, environments, DORA."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .desired import ReleaseWeight
from .hosts import Placement
from .wire import Timestamp, Wire

DeploymentState = Literal[
    "queued",
    "waiting",
    "running",
    "rolling_back",
    "aborting",
    "succeeded",
    "failed",
    "cancelled",
    "superseded",
]


class Evidence(Wire):
    """One check of the judge at one look: what it counted and how it decided."""

    check: str  # error_rate ceiling | p99 ceiling | errors vs baseline | p99 latency vs baseline…
    verdict: Literal["pass", "fail", "inconclusive"]
    summary: str
    canary_requests: int = 0
    canary_events: int | None = None  # errors, or requests slower than the latency bound
    canary_rate: float | None = None
    baseline_requests: int | None = None
    baseline_events: int | None = None
    baseline_rate: float | None = None
    statistic: float | None = None  # observed rate / p99, or the test's e-value
    threshold: float | None = None  # the ceiling, or the e-value at which the test rejects
    bound: float | None = None  # latency tests: the latency (s) a request counts as slow above


class Judgement(Wire):
    """The analysis' last word on a canary step or a watch window, with its evidence."""

    verdict: Literal["pass", "fail", "inconclusive"]
    requests: int
    error_rate: float | None
    p99: float | None
    reasons: list[str] = []
    evidence: list[Evidence] = []
    # a pass that may advance a step early: each comparison saw enough requests to rule
    # out the worsening it looks for (a plain pass only says nothing objected)
    conclusive: bool = False
    at: float | None = None
    promoted_by: str | None = None  # a person ended the step as passed, whatever this said


class SeriesSide(Wire):
    """One release over one interval of a judged step's chart (latencies in seconds)."""

    requests: int
    error_rate: float | None
    p50: float | None
    p99: float | None


class SeriesPoint(Wire):
    """A chart point: the interval ending at `at` (unix time) and the judge's word then."""

    at: float
    verdict: Literal["pass", "fail", "inconclusive"]
    canary: SeriesSide | None = None
    baseline: SeriesSide | None = None


class StepSeries(Wire):
    """A judged step (a canary step or the watch window) with its chart points, oldest first."""

    step: int = Field(description="the step's id")
    position: int
    kind: str
    name: str
    weight: int | None
    state: str
    points: list[SeriesPoint]


class ControlAction(Wire):
    """A person's word on a canary step: promote (to 100% with `full`), pause, resume."""

    action: Literal["promote", "promote-full", "pause", "resume"]
    by: str
    at: datetime


class StepControl(Wire):
    """What people asked of a canary step, kept in its record; the engine honours it."""

    paused_by: str | None = None
    paused_at: float | None = None  # unix time the pause began (None: not paused)
    held: float = 0.0  # seconds of the step's watch that earlier pauses held
    promoted_by: str | None = None
    full: bool = False  # promoted to 100%: the canary's later steps are skipped
    actions: list[ControlAction] = []


class TrafficWait(Wire):
    """A canary step whose judge has too few of the new release's requests to decide yet."""

    requests: int = Field(description="the new release's requests the judge counted so far")
    needed: int = Field(description="analysis.min_requests: how many it needs to decide")
    until: datetime = Field(description="when the step fails for want of traffic")
    urls: list[str] = Field(description="where clients reach the step's hosts: send traffic there")


class DeploymentStepOut(Wire):
    id: int
    position: int
    kind: str
    name: str
    weight: int | None
    state: Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
    reason: str | None
    hosts: list[str]
    targets: dict[str, list[ReleaseWeight]]
    judgement: Judgement | None = None
    waiting_for_traffic: TrafficWait | None = None
    log: str = ""
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration: float | None
    # a canary step: who paused or promoted it, when; and the seconds left in its pause
    control: StepControl | None = None
    pause: float | None = None
    left: float | None = None
    # migrate and contract steps: the content hash of the migration the step ran
    migration_hash: str | None = None


class DeploymentOut(Wire):
    id: int
    app: str
    environment: str
    release: str
    previous_release: str | None
    run: int | None
    kind: Literal["deploy", "rollback", "contract"] = Field(
        description="contract: a contract migration by itself, once older releases went cold"
    )
    strategy: str
    state: DeploymentState
    reason: str | None
    trigger: str
    triggered_by: str
    approved_by: str | None
    approved_at: Timestamp | None
    forced_by: str | None
    force_reason: str | None
    hosts: list[str]
    step: str | None = Field(description="the step underway, if any")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration: float | None
    steps: list[DeploymentStepOut] = []


class DeployRequest(Wire):
    release: str | None = Field(
        default=None,
        max_length=80,
        description="a release id or a commit; default: the newest release that passes the gates",
    )
    force: bool = Field(default=False, description="start outside the window (admin only)")
    reason: str | None = Field(
        default=None, max_length=2000, description="why the window is forced (required)"
    )


class RollbackRequest(Wire):
    to: str | None = Field(
        default=None, max_length=80, description="default: the release served before"
    )


class Holdback(Wire):
    """The previous release's share of traffic while a watch window runs (`monitor:`)."""

    release: str = Field(description="the previous release, kept warm beside the new one")
    share: int = Field(ge=0, le=100, description="its percent of traffic on every host")
    until: Timestamp | None = Field(
        description="when the watch window ends and the share goes to 0 (unknown until the "
        "hosts converged)"
    )


class PendingContract(Wire):
    """migrations.contract of the release serving an environment, not applied yet."""

    release: str = Field(description="the release that brought it")
    command: str
    waiting: str | None = Field(
        description="why it waits (the hosts serving or keeping warm an older release); "
        "None: it runs as the first step of the next deployment"
    )


class EnvironmentStatus(Wire):
    name: str
    strategy: str
    release: str | None = Field(description="the release the record says serves it")
    hosts: list[Placement] = []
    deployment: DeploymentOut | None = Field(description="the deployment underway or queued")
    last: DeploymentOut | None = Field(description="the last deployment that ended")
    holdback: Holdback | None = Field(
        default=None,
        description="while a watch window runs with a holdback: the previous release's share",
    )
    contract: PendingContract | None = Field(
        default=None, description="a contract migration not applied yet, and why it waits"
    )


class DoraEnvironment(Wire):
    """The four delivery metrics of one environment (definitions: conveyor.deploy.dora)."""

    environment: str
    deployments: int = Field(description="successful deployments of a change in the window")
    deployment_frequency: float | None = Field(description="successful deployments per day")
    lead_time: float | None = Field(description="median seconds from commit to deployed")
    lead_time_p90: float | None = Field(description="90th percentile of the lead time, seconds")
    lead_time_from_run: int = Field(
        description="lead times counted from the run's creation: the commit time was unknown"
    )
    changes: int = Field(description="deployments of a change that succeeded or failed")
    failed_changes: int = Field(description="of those, failed or later undone by a rollback")
    change_failure_rate: float | None
    failures: int = Field(description="failures in the window (failed or undone changes)")
    restored: int = Field(description="of those, how many a healthy release replaced since")
    time_to_restore: float | None = Field(description="median seconds to restore")


class DoraReport(Wire):
    app: str
    since: Timestamp
    until: Timestamp
    days: float
    environments: list[DoraEnvironment]


DeploymentStepOut.model_rebuild()
EnvironmentStatus.model_rebuild()
