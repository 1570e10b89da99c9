"""The server's durable state: SQLAlchemy models, one table per concept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# A deployment's states. The database holds at most one of each group per app and
# environment (partial unique indexes below): one waiting its turn, one acting on hosts.
# queued: waiting for its environment; waiting: for approval or the window
DEPLOYMENT_PENDING = ("queued", "waiting")
# running / rolling_back: acting on hosts; aborting: asked to stop, rolls back next
DEPLOYMENT_ACTING = ("running", "rolling_back", "aborting")


def _state_in(states: tuple[str, ...]) -> Any:
    return text("state IN ({})".format(", ".join(f"'{s}'" for s in states)))


class Base(DeclarativeBase):
    pass


class Token(Base):
    """An API credential; only its sha256 is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class WebSession(Base):
    """A dashboard sign-in: a random id in an HttpOnly cookie, bound to the API token used."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class App(Base):
    """One repository with a conveyor.yml."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    repo_url: Mapped[str] = mapped_column(Text)
    branch: Mapped[str] = mapped_column(String(255), default="main")
    webhook_secret: Mapped[str] = mapped_column(String(100))
    poll_interval: Mapped[int | None] = mapped_column(Integer, default=None)
    last_polled_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    last_polled_at: Mapped[datetime | None] = mapped_column(default=None)
    # opt-in: a read-only page at /status/<app> that anyone may read, without a token
    public_status: Mapped[bool] = mapped_column(default=False)
    # where commit statuses of pull-request runs go (forge/statuses.py); none: the forge's default
    forge_api: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    secrets: Mapped[list[Secret]] = relationship(back_populates="app", cascade="all, delete-orphan")


# Secret.environment for a value every environment gets (an environment's own one wins)
EVERY_ENVIRONMENT = ""


class Secret(Base):
    """A value handed to steps and instances by name, masked in every log.

    Sealed with the server's key file (conveyor.sealing): `value` holds the value
    itself (kind "value") or a command run on the server at each deployment whose
    output is the value (kind "command"). `sealed` is false only for rows written by
    an older conveyor, until the next start seals them.
    """

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("app_id", "name", "environment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(100), default=EVERY_ENVIRONMENT)
    kind: Mapped[str] = mapped_column(String(20), default="value")
    value: Mapped[str] = mapped_column(Text)
    sealed: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    app: Mapped[App] = relationship(back_populates="secrets")


class ResolvedSecret(Base):
    """The output of a secret's command, from the last deployment to an environment (sealed)."""

    __tablename__ = "resolved_secrets"
    __table_args__ = (UniqueConstraint("app_id", "environment", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)
    resolved_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Run(Base):
    """One commit going through the pipeline."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    sha: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(255), default=None)
    trigger: Mapped[str] = mapped_column(String(20))
    triggered_by: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    release_id: Mapped[str | None] = mapped_column(String(80), default=None)
    # the commit's committer time, read at checkout: lead time for changes starts here
    committed_at: Mapped[datetime | None] = mapped_column(default=None)
    # read at checkout too, for the dashboard: "Name <email>", and the whole message
    commit_author: Mapped[str | None] = mapped_column(String(255), default=None)
    commit_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # handed to runners (pipeline/handoff.py): the plan of its steps (JSON), the runner
    # that claimed it and until when its heartbeat keeps it; none while a server runs it
    handoff: Mapped[str | None] = mapped_column(Text, default=None)
    runner: Mapped[str | None] = mapped_column(String(100), default=None)
    runner_expires_at: Mapped[datetime | None] = mapped_column(default=None)

    app: Mapped[App] = relationship()
    steps: Mapped[list[Step]] = relationship(
        back_populates="run", order_by="(Step.attempt, Step.position)", cascade="all, delete-orphan"
    )
    # a pull request's run (forge/): what it tests, and the statuses posted to its forge
    pull_request: Mapped[PullRequestRun | None] = relationship(viewonly=True)
    commit_statuses: Mapped[list[CommitStatus]] = relationship(
        viewonly=True, order_by="CommitStatus.id"
    )


class Step(Base):
    """One subprocess of a run (checkout, a test or build command, the artifact)."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(255))
    command: Mapped[str | None] = mapped_column(Text, default=None)
    timeout: Mapped[float | None] = mapped_column(default=None)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    log_path: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    run: Mapped[Run] = relationship(back_populates="steps")


class Release(Base):
    """The immutable artifact built once from a commit."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    sha: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    # bytes: an artifact may pass 2 GiB, PostgreSQL's integer (SQLite's are 64-bit anyway)
    size: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # sha256 of what its migrations run (deploy/migrationhash.py); None: it has none
    migration_hash: Mapped[str | None] = mapped_column(String(64), default=None)

    app: Mapped[App] = relationship()


class WebhookDelivery(Base):
    """A webhook event already seen, so that a redelivery runs nothing twice."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("provider", "delivery_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str] = mapped_column(String(255))
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(Base):
    """A machine running `conveyor agent`, known by name."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    enrolment_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    agent_token_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    applied_generation: Mapped[int | None] = mapped_column(Integer, default=None)
    observed: Mapped[str | None] = mapped_column(Text, default=None)
    # infrastructure checks its agent should run now (a JSON list of protocol.ChecksRequest)
    checks: Mapped[str | None] = mapped_column(Text, default=None)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    apps: Mapped[list[HostApp]] = relationship(
        back_populates="host", cascade="all, delete-orphan", order_by="HostApp.id"
    )


class HostApp(Base):
    """The desired releases and weights of one app on one host, written before agents act."""

    __tablename__ = "host_apps"
    __table_args__ = (UniqueConstraint("host_id", "app_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    releases: Mapped[str] = mapped_column(Text, default="[]")
    sticky: Mapped[bool] = mapped_column(default=False)
    # the environment whose env and secrets these releases get (None: every one's only)
    environment: Mapped[str | None] = mapped_column(String(100), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    host: Mapped[Host] = relationship(back_populates="apps")
    app: Mapped[App] = relationship()


class Deployment(Base):
    """One release going onto one environment: an ordered list of persisted steps."""

    __tablename__ = "deployments"
    __table_args__ = (
        Index(
            "uq_deployments_one_pending",
            "app_id",
            "environment",
            unique=True,
            sqlite_where=_state_in(DEPLOYMENT_PENDING),
            postgresql_where=_state_in(DEPLOYMENT_PENDING),
        ),
        Index(
            "uq_deployments_one_acting",
            "app_id",
            "environment",
            unique=True,
            sqlite_where=_state_in(DEPLOYMENT_ACTING),
            postgresql_where=_state_in(DEPLOYMENT_ACTING),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(100))
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    run_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    kind: Mapped[str] = mapped_column(String(20), default="deploy")
    strategy: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    trigger: Mapped[str] = mapped_column(String(20))
    triggered_by: Mapped[str] = mapped_column(String(255), default="")
    approved_by: Mapped[str | None] = mapped_column(String(255), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(default=None)
    forced_by: Mapped[str | None] = mapped_column(String(255), default=None)
    force_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # JSON: {host: [{release, weight}]} before the deployment touched anything
    previous: Mapped[str | None] = mapped_column(Text, default=None)
    previous_release: Mapped[str | None] = mapped_column(String(80), default=None)
    # JSON: the hosts this deployment touched (to roll back), in order
    touched: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    app: Mapped[App] = relationship()
    release: Mapped[Release] = relationship()
    steps: Mapped[list[DeploymentStep]] = relationship(
        back_populates="deployment",
        order_by="DeploymentStep.position",
        cascade="all, delete-orphan",
    )


class DeploymentStep(Base):
    """One persisted step of a deployment: migrate, a batch, a weight, verify, rollback."""

    __tablename__ = "deployment_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(255))
    # JSON: {host: [{release, weight}]} this step writes as the hosts' desired state
    targets: Mapped[str] = mapped_column(Text, default="{}")
    weight: Mapped[int | None] = mapped_column(Integer, default=None)
    state: Mapped[str] = mapped_column(String(20), default="pending")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    # JSON: what the step needs to resume after a crash (generations written, metric baselines…)
    detail: Mapped[str] = mapped_column(Text, default="{}")
    log: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # migrate and contract steps: the migration's content hash (its release's), recorded
    # with the step's outcome: what a later environment's gate asks for
    migration_hash: Mapped[str | None] = mapped_column(String(64), default=None)

    deployment: Mapped[Deployment] = relationship(back_populates="steps")


class Notification(Base):
    """One message for one notify target, kept until delivered (or given up on)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int | None] = mapped_column(
        ForeignKey("apps.id", ondelete="CASCADE"), default=None
    )
    # one message per target per happening: e.g. "deployment:12:end", "run:5:1:end"
    key: Mapped[str] = mapped_column(String(120), index=True)
    # the kinds it carries, comma-separated: failure, rollback, approval, success
    event: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    deployment_id: Mapped[int | None] = mapped_column(Integer, default=None)
    target: Mapped[str] = mapped_column(Text)  # the Apprise URL
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


class IdempotentRequest(Base):
    """The answer given to a request sent with an `Idempotency-Key`, replayed to its retries.

    One per token, method and path, and key (`scope` is their sha256); kept a day.
    """

    __tablename__ = "idempotent_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of the request's body as parsed: the same key with another body is refused
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("token_id", "scope"),)


class Lease(Base):
    """Which server drives a deployment (or a run) and until when (store/leases.py)."""

    __tablename__ = "leases"

    kind: Mapped[str] = mapped_column(String(20), primary_key=True)  # deployment | run
    key: Mapped[int] = mapped_column(Integer, primary_key=True)  # its id
    holder: Mapped[str] = mapped_column(String(100))  # the server: name, pid, number
    server: Mapped[int] = mapped_column(Integer)  # its liveness lock (store/cluster.py)
    generation: Mapped[int] = mapped_column(Integer)  # +1 at each takeover: the fence
    expires_at: Mapped[datetime] = mapped_column()  # naive UTC, the database's clock


# the tables kept in modules of their own, importable from here as every other table
from conveyor.store.flag_models import Flag as Flag  # noqa: E402
from conveyor.store.flag_models import FlagChange as FlagChange  # noqa: E402
from conveyor.store.flag_models import FlagClient as FlagClient  # noqa: E402
from conveyor.store.flag_models import FlagRollout as FlagRollout  # noqa: E402
from conveyor.store.flag_models import FlagToken as FlagToken  # noqa: E402
from conveyor.store.stage_models import CommitStatus as CommitStatus  # noqa: E402
from conveyor.store.stage_models import LoadRecord as LoadRecord  # noqa: E402
from conveyor.store.stage_models import Provisioned as Provisioned  # noqa: E402
from conveyor.store.stage_models import PullRequestRun as PullRequestRun  # noqa: E402
from conveyor.store.stage_models import Runner as Runner  # noqa: E402
