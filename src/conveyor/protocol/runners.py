"""What a `conveyor runner` and the server say to each other (server/api/runners.py).

A runner claims a run handed off by the server, gets its job (the steps, their
environment, the secrets to mask), reports each step and uploads the artifact.
Every request about a claimed run names the claim (`CLAIM_HEADER`: runner/attempt),
so a runner that lost the run (its heartbeat stopped, the run was retried or
aborted) gets 409 and stops instead of writing over another's work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .wire import Timestamp, Wire

CLAIM_HEADER = "X-Conveyor-Claim"
ARTIFACT_HEADER = "X-Conveyor-Artifact"  # the upload's facts (ArtifactFacts, JSON)
CLAIM_WAIT = 10.0  # seconds a claim request waits for a run (long-poll) at most
HEARTBEAT_EVERY = 2.0  # seconds between two heartbeats of a runner on a run


def claim_value(runner: str, attempt: int) -> str:
    return f"{runner}/{attempt}"


def parse_claim(value: str) -> tuple[str, int] | None:
    runner, sep, attempt = value.rpartition("/")
    if not sep or not runner or not attempt.isdigit():
        return None
    return runner, int(attempt)


RunnerName = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


Label = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length=63)]


class RunnerClaim(Wire):
    name: str = RunnerName
    labels: list[Label] = Field(default_factory=list, max_length=50)
    wait: float = Field(default=CLAIM_WAIT, ge=0, le=60)


class JobStep(Wire):
    id: int
    kind: Literal["test", "build", "lint"]
    name: str
    command: str
    timeout: float
    env: dict[str, str] = {}


class RunnerJob(Wire):
    """A claimed run: what the runner checks out, runs and uploads."""

    run: int
    attempt: int
    app: str
    sha: str
    steps: list[JobStep]
    artifact_step: int | None  # none: a pull request's run, tests only
    include: list[str] = ["."]
    exclude: list[str] = []
    env: dict[str, str] = {}  # CONVEYOR_* of the run and the app's secrets it uses
    mask: list[str] = []  # secret values to mask in every log line
    migration_files: list[str] = []  # files whose sha256 go with the artifact


class StepEnd(Wire):
    state: Literal["succeeded", "failed", "cancelled"]
    reason: str | None = Field(default=None, max_length=2000)
    exit_code: int | None = None


class RunEnd(Wire):
    state: Literal["succeeded", "failed", "cancelled"]
    reason: str | None = Field(default=None, max_length=2000)


class ArtifactFacts(Wire):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    files: int = Field(ge=0)
    sql_digest: str | None = Field(default=None, max_length=200)
    migration_files: dict[str, str | None] = {}


class RunnerOut(Wire):
    name: str
    labels: list[str]
    last_seen: Timestamp
    live: bool  # seen lately: runs without labels go to the runners while one is


class ArtifactAccepted(Wire):
    release: str
