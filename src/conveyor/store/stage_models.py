"""The tables of the pipeline's later stages (models.py re-exports them): pull-request
runs and their commit statuses, load-test records, provisioned environments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.store.models import Base, utcnow


class PullRequestRun(Base):
    """What a pull-request run tests, and which commit status the forge last got of it.

    A run with such a row runs its test steps only: no release, no deployment.
    """

    __tablename__ = "pull_request_runs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    forge: Mapped[str] = mapped_column(String(20))  # github | gitlab | gitea
    project: Mapped[str] = mapped_column(String(255))  # "owner/repo", or GitLab's project id
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str | None] = mapped_column(Text, default=None)  # the request's page
    head_sha: Mapped[str] = mapped_column(String(64))  # statuses are posted on it
    head_ref: Mapped[str] = mapped_column(String(255))
    merge_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    tested_sha: Mapped[str | None] = mapped_column(String(64), default=None)  # head or merge
    # the last status handed to the forge (or given up on), and whether the last is final
    reported: Mapped[str | None] = mapped_column(String(20), default=None)
    done: Mapped[bool] = mapped_column(default=False, index=True)


class CommitStatus(Base):
    """One commit status posted (or attempted) to a forge for a pull-request run."""

    __tablename__ = "commit_statuses"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(20))  # pending, running, success, failure, error
    description: Mapped[str] = mapped_column(Text, default="")
    target_url: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(20), default="sending")  # sent | failed
    http_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class LoadRecord(Base):
    """One load test of a release on an environment: what the next release is judged by."""

    __tablename__ = "load_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(100))
    test: Mapped[str] = mapped_column(String(255))  # rate and paths: only like is compared
    release_id: Mapped[str] = mapped_column(String(80))
    deployment_id: Mapped[int | None] = mapped_column(Integer, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    rate_asked: Mapped[float] = mapped_column(Float)
    rate: Mapped[float] = mapped_column(Float)  # requests a second achieved
    seconds: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    p50: Mapped[float | None] = mapped_column(Float, default=None)  # seconds
    p95: Mapped[float | None] = mapped_column(Float, default=None)
    p99: Mapped[float | None] = mapped_column(Float, default=None)
    counters: Mapped[str] = mapped_column(Text)  # ReleaseCounters (JSON): what the judge reads
    verdict: Mapped[str] = mapped_column(String(20))  # baseline | pass | fail

    __table_args__ = (Index("ix_load_records_app_env", "app_id", "environment"),)


class Provisioned(Base):
    """An environment a provision command created for one deployment, until torn down:
    written before the command runs, so a restarted server tears down what it left."""

    __tablename__ = "provisioned"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(100))
    deployment_id: Mapped[int] = mapped_column(Integer, index=True)
    # provisioning | up | torn_down | teardown_failed (retried)
    state: Mapped[str] = mapped_column(String(20), default="provisioning")
    hosts: Mapped[str] = mapped_column(Text, default="[]")  # JSON: the host names it made
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # teardowns tried
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    torn_down_at: Mapped[datetime | None] = mapped_column(default=None)


class Runner(Base):
    """A `conveyor runner` seen by the server: its name, labels and last request."""

    __tablename__ = "runners"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    labels: Mapped[str] = mapped_column(Text, default="")  # comma-separated, sorted
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("tokens.id", ondelete="SET NULL"), default=None
    )
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
