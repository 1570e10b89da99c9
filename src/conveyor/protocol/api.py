"""API records: apps, runs, releases, notifications, an app's status, tokens and hooks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .deployments import EnvironmentStatus
from .hosts import Placement
from .wire import (
    BRANCH_PATTERN,
    MAX_BRANCH,
    MAX_POLL,
    MAX_REPO,
    REPO_PATTERN,
    Role,
    RunState,
    StepState,
    Timestamp,
    Wire,
)

# an http(s) URL without spaces or control characters; "" (AppUpdate) clears it
FORGE_API_PATTERN = r"^(https?://[^\s\x00-\x1f]+)?$"


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
    forge_api: str | None = Field(
        default=None,
        max_length=MAX_REPO,
        pattern=FORGE_API_PATTERN,
        description="the forge's API base URL, for commit statuses of pull requests "
        "(e.g. https://gitea.example.com/api/v1); none: the forge's default",
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
    forge_api: str | None = Field(
        default=None,
        max_length=MAX_REPO,
        pattern=FORGE_API_PATTERN,
        description="the forge's API base URL, for commit statuses of pull requests; "
        '"" goes back to the default (GitHub: https://api.github.com, GitLab: '
        "https://gitlab.com/api/v4)",
    )


class AppOut(Wire):
    name: str
    repo: str
    branch: str
    poll_interval: int | None
    created_at: Timestamp
    public_status: bool = False
    forge_api: str | None = None


class Webhooks(Wire):
    github: str
    gitlab: str
    gitea: str


class AppCreated(AppOut):
    webhook_secret: str
    webhooks: Webhooks


class SecretSet(Wire):
    """A secret's value, or a command the server runs at each deployment to get it."""

    value: str | None = Field(
        default=None,
        min_length=4,
        max_length=64 * 1024,
        description="4 characters to 64 KiB (at least 4, so masking stays exact)",
    )
    command: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="run on the server (sh -c) at each deployment; its output is the value",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SecretSet:
        if (self.value is None) == (self.command is None):
            raise ValueError("expected either value or command")
        return self


class SecretOut(Wire):
    """A secret's name and scope: never its value."""

    name: str
    environment: str | None = Field(description="null: every environment")
    kind: Literal["value", "command"]


class KeyRotated(Wire):
    resealed: int = Field(description="values sealed again with the new key")


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


class CommitStatusOut(Wire):
    """A commit status posted (or attempted) to the forge of a pull request."""

    state: Literal["pending", "running", "success", "failure", "error"]
    description: str
    target_url: str
    outcome: Literal["sending", "sent", "failed"]
    http_status: int | None
    error: str | None = Field(description="why the forge did not take it (a refused token…)")
    attempts: int
    created_at: Timestamp


class PullRequestOut(Wire):
    """The pull (merge) request a run tests: its head, and what was checked out."""

    forge: Literal["github", "gitlab", "gitea"]
    project: str
    number: int
    title: str
    url: str | None
    head_sha: str
    tested_sha: str | None = Field(description="the head, or the forge's merge result")
    statuses: list[CommitStatusOut] = []


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
    # a pull request's run: tests only, no release (none for runs of the branch)
    pull_request: PullRequestOut | None = None
    # the `conveyor runner` that ran its steps (none: the server did)
    runner: str | None = None


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
    # what its migrations run, by content (None: it has none, or was built before hashes)
    migration_hash: str | None = None


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


class AppStatus(Wire):
    app: AppOut
    active_runs: list[RunOut]
    last_run: RunOut | None
    last_release: ReleaseOut | None
    hosts: list[Placement] = []
    environments: list[EnvironmentStatus] = []


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


AppStatus.model_rebuild()
