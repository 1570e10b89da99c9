"""Wire models shared by the server, the CLI and (later) the agent.

The only module both wings import: what goes over HTTP is defined here once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

Role = Literal["viewer", "deployer", "admin"]
RunState = Literal["queued", "running", "succeeded", "failed", "superseded", "cancelled"]
StepState = Literal[
    "pending", "running", "succeeded", "failed", "skipped", "cancelled", "interrupted"
]


# A request naming a release in this header reaches that release's instance on a host's
# router whatever its weight (0 included): how a deployment checks a release before users
# see it. The controller sends it, both router backends honour it; an unknown release is a
# 503, never another release.
PREVIEW_HEADER = "X-Conveyor-Release"


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


# The largest integer a database column holds (SQLite's and PostgreSQL's bigint): ids,
# offsets and generations above it are refused at the edge, never overflow in a query.
MAX_INT = 2**63 - 1


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _aware_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A moment in UTC: naive in Python (as the database stores it), with its zone on the wire
# ("2026-12-05T20:34:01Z"), so that it is an RFC 3339 `date-time` every client can read.
Timestamp = Annotated[
    datetime,
    AfterValidator(_naive_utc),
    PlainSerializer(_aware_utc, return_type=datetime, when_used="json"),
]


MAX_REPO = 4096  # a URL or a path (PATH_MAX)
MAX_POLL = 7 * 24 * 3600  # a week, in seconds
MAX_BRANCH = 255 - len("refs/heads/")  # its ref fits the 255 characters a run records
# a repository: any URL or path git takes, but no control character (none survives argv)
REPO_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# a branch name: none of what git refuses in a ref (space, control characters, ~^:?*[\)
BRANCH_PATTERN = r"^[^\x00-\x20\x7f~^:?*\[\\]+$"


class AppCreate(Wire):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length=100)
    repo: str = Field(
        min_length=1,
        max_length=MAX_REPO,
        pattern=REPO_PATTERN,
        description="a URL or path git can clone (no control characters)",
    )
    branch: str = Field(
        default="main",
        max_length=MAX_BRANCH,
        pattern=BRANCH_PATTERN,
        description="a branch name (no space, control character nor ~^:?*[\\)",
    )
    poll_interval: int | None = Field(
        default=None, ge=1, le=MAX_POLL, description="seconds (at most a week); none: no polling"
    )


class AppUpdate(Wire):
    """Change an app's settings; fields left out stay as they are."""

    repo: str | None = Field(default=None, max_length=MAX_REPO, pattern=REPO_PATTERN)
    branch: str | None = Field(default=None, max_length=MAX_BRANCH, pattern=BRANCH_PATTERN)
    poll_interval: int | None = Field(
        default=None, ge=0, le=MAX_POLL, description="seconds (at most a week); 0 turns polling off"
    )
    public_status: bool | None = Field(
        default=None, description="a read-only page at /status/NAME that needs no token"
    )


class AppOut(Wire):
    name: str
    repo: str
    branch: str
    poll_interval: int | None
    created_at: Timestamp
    public_status: bool = False


class Webhooks(Wire):
    github: str
    gitlab: str
    gitea: str


class AppCreated(AppOut):
    webhook_secret: str
    webhooks: Webhooks


class SecretSet(Wire):
    value: str = Field(
        min_length=4,
        max_length=64 * 1024,
        description="4 characters to 64 KiB (at least 4, so masking stays exact)",
    )


class RunCreate(Wire):
    sha: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{4,40}$")


class StepOut(Wire):
    id: int
    attempt: int
    position: int
    kind: str
    name: str
    command: str | None
    state: StepState
    exit_code: int | None
    reason: str | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration: float | None


class RunOut(Wire):
    id: int
    app: str
    sha: str
    ref: str | None
    trigger: str
    triggered_by: str
    state: RunState
    reason: str | None
    attempt: int
    release: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration: float | None
    steps: list[StepOut] = []
    # the commit as read at checkout (none before it, nor for runs made before 0006)
    committed_at: Timestamp | None = None
    commit_author: str | None = Field(default=None, description='"Name <email>"')
    commit_message: str | None = None


class LogChunk(Wire):
    step: int
    offset: int
    next_offset: int
    text: str
    complete: bool


class ReleaseOut(Wire):
    id: str
    app: str
    sha: str
    run: int
    sha256: str
    size: int
    created_at: Timestamp


class NotificationOut(Wire):
    """One message to one notify target, and how its delivery went."""

    id: int
    app: str | None
    event: str = Field(description="the kinds it carries, comma-separated")
    kinds: list[str]
    run: int | None
    deployment: int | None
    target: str = Field(description="the Apprise URL, secrets hidden")
    title: str
    body: str
    state: str = Field(description="pending | sent | failed")
    attempts: int
    last_error: str | None
    created_at: Timestamp
    next_attempt_at: Timestamp | None
    sent_at: Timestamp | None


class Placement(Wire):
    """One host's share of an app: what it should run and what its agent reports."""

    host: str
    online: bool
    converged: bool
    desired: list[ReleaseWeight]
    observed: list[ObservedRelease]
    error: str | None = None


class AppStatus(Wire):
    app: AppOut
    active_runs: list[RunOut]
    last_run: RunOut | None
    last_release: ReleaseOut | None
    hosts: list[Placement] = []
    environments: list[EnvironmentStatus] = []


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


class DeploymentOut(Wire):
    id: int
    app: str
    environment: str
    release: str
    previous_release: str | None
    run: int | None
    kind: Literal["deploy", "rollback"]
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


class EnvironmentStatus(Wire):
    name: str
    strategy: str
    release: str | None = Field(description="the release the record says serves it")
    hosts: list[Placement] = []
    deployment: DeploymentOut | None = Field(description="the deployment underway or queued")
    last: DeploymentOut | None = Field(description="the last deployment that ended")


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


class TokenCreate(Wire):
    name: str = Field(min_length=1, max_length=100)
    role: Role


class TokenOut(Wire):
    id: int
    name: str
    role: Role
    created_at: Timestamp
    revoked: bool


class TokenCreated(TokenOut):
    token: str


class HookAccepted(Wire):
    status: Literal["queued", "ignored", "duplicate"]
    detail: str
    run: int | None = None


# -- router metrics (reported by agents, judged by the server) ---------------------

# Upper bounds (seconds) of the latency histogram buckets, shared by both backends;
# +Inf is implied by the total count.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ReleaseCounters(Wire):
    """Counters of one release on one host since the router started (monotonic)."""

    requests: int = 0
    errors_5xx: int = 0
    connect_failures: int = 0
    in_flight: int = 0
    latency_buckets: list[int] = Field(
        default_factory=lambda: [0] * len(LATENCY_BUCKETS),
        description="cumulative counts of requests with latency <= each LATENCY_BUCKETS bound",
    )
    latency_sum: float = 0.0


class AppMetrics(Wire):
    app: str
    releases: dict[str, ReleaseCounters] = {}


class RouterMetrics(Wire):
    backend: str
    started_at: float = Field(description="unix time the router process started")
    apps: dict[str, AppMetrics] = {}


# -- hosts and agents -------------------------------------------------------------

HostState = Literal["pending", "enrolled", "revoked"]


class HostCreate(Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)


class HostOut(Wire):
    name: str
    state: HostState
    online: bool
    last_seen: Timestamp | None
    generation: int
    applied_generation: int | None
    observed: ObservedState | None = None


class HostCreated(HostOut):
    enrolment_token: str


class Enrol(Wire):
    name: str = Field(max_length=100)
    token: str = Field(max_length=200)


class Enrolled(Wire):
    agent_token: str


class ServiceSpec(Wire):
    """How a release runs on a host: SPEC §2 `service`, with secret values resolved."""

    start: str
    port: int
    health_path: str = "/healthz"
    health_interval: float = 1.0
    health_timeout: float = 30.0
    drain: float = 30.0
    keep_warm: float = 600.0
    keep_warm_releases: int = Field(
        default=1, description="how many retired releases stay warm (the last ones retired)"
    )
    env: dict[str, str] = {}
    install_hook: str | None = None


class MigrateRequest(Wire):
    """Run hooks.migrate once for one deployment, after install and before the instance starts."""

    id: str = Field(
        description="unique per deployment, e.g. 'deployment-12'; the agent runs each id once"
    )
    command: str
    timeout: float = 600.0


class MigrationResult(Wire):
    id: str
    state: Literal["running", "succeeded", "failed"]
    exit_code: int | None = None
    output: str = Field(
        default="", description="the last 4000 characters of the hook's stdout+stderr"
    )
    finished_at: float | None = None  # unix time


class DesiredRelease(Wire):
    release: str
    sha256: str
    artifact: str = Field(description="path on the server to download the artifact from")
    weight: int = Field(ge=0, le=100)
    service: ServiceSpec
    migrate: MigrateRequest | None = None


class DesiredApp(Wire):
    app: str
    releases: list[DesiredRelease]
    sticky: bool = False


class DesiredState(Wire):
    """What the server wants a host to run; agents converge toward it."""

    host: str
    generation: int
    apps: list[DesiredApp] = []


class HostAppSet(Wire):
    """Set the releases and weights of an app on one host (the reconciler's input)."""

    releases: list[ReleaseWeight] = Field(min_length=0, max_length=100)
    sticky: bool = False


class ReleaseWeight(Wire):
    release: str = Field(max_length=80)
    weight: int = Field(ge=0, le=100)
    migrate: str | None = Field(
        default=None,
        max_length=255,
        description="a migration id: run hooks.migrate once for it before this release starts",
    )


ReleasePhase = Literal["installing", "starting", "healthy", "failed", "draining", "warm", "stopped"]


class ObservedRelease(Wire):
    release: str
    phase: ReleasePhase
    weight: int = 0
    instances: int = 0
    port: int | None = None
    pid: int | None = None
    restarts: int = 0
    error: str | None = None
    migration: MigrationResult | None = None


class ObservedApp(Wire):
    app: str
    current: str | None = None
    releases: list[ObservedRelease] = []
    routed: bool = Field(default=False, description="the router applies the desired weights")
    error: str | None = None


class ObservedState(Wire):
    """What an agent reports: per app, each release's phase and share of traffic."""

    host: str
    generation: int = Field(
        ge=-1,
        le=MAX_INT,
        description="the desired generation these observations converge to (-1: none yet)",
    )
    converged: bool = False
    router: str = "embedded"
    router_alive: bool = False
    address: str | None = Field(
        default=None,
        description="where clients reach this host's router: its --bind address, or the "
        "address the server saw the report come from when the router binds every address",
    )
    apps: list[ObservedApp] = []
    errors: list[str] = []
    metrics: RouterMetrics | None = None


HostAppSet.model_rebuild()
Placement.model_rebuild()
AppStatus.model_rebuild()
DeploymentStepOut.model_rebuild()
EnvironmentStatus.model_rebuild()
HostOut.model_rebuild()
HostCreated.model_rebuild()
