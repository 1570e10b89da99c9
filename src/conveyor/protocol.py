"""Wire models shared by the server, the CLI and (later) the agent.

The only module both wings import: what goes over HTTP is defined here once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "deployer", "admin"]
RunState = Literal["queued", "running", "succeeded", "failed", "superseded", "cancelled"]
StepState = Literal[
    "pending", "running", "succeeded", "failed", "skipped", "cancelled", "interrupted"
]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AppCreate(Wire):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length=100)
    repo: str = Field(min_length=1)
    branch: str = Field(default="main", min_length=1, max_length=255)
    poll_interval: int | None = Field(default=None, ge=1, description="seconds; none: no polling")


class AppOut(Wire):
    name: str
    repo: str
    branch: str
    poll_interval: int | None
    created_at: datetime


class Webhooks(Wire):
    github: str
    gitlab: str
    gitea: str


class AppCreated(AppOut):
    webhook_secret: str
    webhooks: Webhooks


class SecretSet(Wire):
    value: str = Field(min_length=4, description="at least 4 characters, so masking stays exact")


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
    started_at: datetime | None
    finished_at: datetime | None
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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    steps: list[StepOut] = []


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
    created_at: datetime


class AppStatus(Wire):
    app: AppOut
    active_runs: list[RunOut]
    last_run: RunOut | None
    last_release: ReleaseOut | None


class TokenCreate(Wire):
    name: str = Field(min_length=1, max_length=100)
    role: Role


class TokenOut(Wire):
    id: int
    name: str
    role: Role
    created_at: datetime
    revoked: bool


class TokenCreated(TokenOut):
    token: str


class HookAccepted(Wire):
    status: Literal["queued", "ignored", "duplicate"]
    detail: str
    run: int | None = None
