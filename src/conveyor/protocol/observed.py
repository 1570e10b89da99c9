"""Observed state: what an agent reports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .checks import ChecksResult
from .desired import MigrationResult
from .metrics import RouterMetrics
from .wire import MAX_RECORD_INT, Wire

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
        le=MAX_RECORD_INT,
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
    http_port: int = Field(
        default=80, ge=1, le=65535, description="the router's shared port (agent --http-port)"
    )
    https_port: int = Field(
        default=443, ge=1, le=65535, description="the router's shared HTTPS port (--https-port)"
    )
    apps: list[ObservedApp] = []
    errors: list[str] = []
    metrics: RouterMetrics | None = None
    checks: list[ChecksResult] = Field(
        default=[], description="the infrastructure checks of the desired state, as they went"
    )
    agent_version: str | None = Field(
        default=None, max_length=64, description="the agent's conveyor version (None: 0.1.0)"
    )
    challenges: list[str] = Field(
        default=[],
        max_length=1000,
        description="the ACME HTTP-01 tokens of the desired state its router answers now",
    )
