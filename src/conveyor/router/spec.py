"""What the agent tells a router, and what a router reports: the driver seam's data.

Both backends (the embedded proxy and HAProxy) take a `RouteSpec` per app and
report `RouterMetrics`; the agent never knows which one it is talking to.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

# what a router reports travels on to the server: those are wire models, defined once there
from conveyor.protocol import (
    LATENCY_BUCKETS,
    PREVIEW_HEADER,
    AppMetrics,
    ReleaseCounters,
    RouterMetrics,
)

__all__ = [
    "LATENCY_BUCKETS",
    "PREVIEW_HEADER",
    "AppMetrics",
    "ReleaseCounters",
    "RouteSpec",
    "Router",
    "RouterError",
    "RouterMetrics",
    "Target",
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(Model):
    """One instance of one release, reachable on loopback."""

    release: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    weight: int = Field(
        ge=0, le=100, description="share of new requests; 0: none but previews (PREVIEW_HEADER)"
    )


class RouteSpec(Model):
    """The whole routing of one app on this host; applying it replaces the previous one.

    A target absent from a new spec, or present with weight 0, gets no new request;
    its in-flight requests finish (up to `drain_timeout`), and `in_flight` in the
    metrics tells the agent when it is safe to stop the instance. A target of any
    weight still answers the requests that name its release in `PREVIEW_HEADER`.
    """

    app: str
    port: int = Field(ge=1, le=65535, description="the public port (service.port)")
    bind: str = "0.0.0.0"
    targets: list[Target] = []
    sticky: bool = Field(default=False, description="pin a client to a release by cookie")
    drain_timeout: float = Field(default=30.0, ge=0)


class RouterError(Exception):
    """A router refused an operation or cannot be reached; the message says why."""


class Router(Protocol):
    """The driver seam: the agent drives any router backend through these calls."""

    name: str

    async def start(self) -> None:
        """Make sure the router process runs (start it if needed, adopt it if it does)."""

    async def alive(self) -> bool:
        """Whether the router process answers on its admin interface."""

    async def apply(self, spec: RouteSpec) -> None:
        """Set the listener, targets and weights of one app, without dropping a request."""

    async def remove(self, app: str) -> None:
        """Stop serving an app (its listener closes after in-flight requests finish)."""

    async def metrics(self) -> RouterMetrics:
        """Counters per app and release."""

    async def stop(self) -> None:
        """Stop the router process (used by tests and `conveyor agent --stop-router`)."""
