"""The driver seam: how the agent drives its host's router, whichever backend it is.

Both drivers (`embedded.EmbeddedRouter`, the `conveyor router` process, and
`haproxy.HAProxyRouter`) take a `RouteSpec` per app and report `RouterMetrics`; the agent
never knows which one it is talking to. The data they carry is `conveyor.routespec`.
"""

from __future__ import annotations

from typing import Protocol

from conveyor.routespec import (
    LATENCY_BUCKETS,
    PREVIEW_HEADER,
    AppMetrics,
    ReleaseCounters,
    RouterMetrics,
    RouteSpec,
    Target,
    TlsRoute,
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
    "TlsRoute",
]


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

    async def challenges(self, bind: str, port: int, answers: dict[str, str]) -> None:
        """Answer these ACME HTTP-01 challenges (token -> key authorization) on every plain
        shared port, whatever the Host, listening on (bind, port) if no app does yet;
        replaces the previous set."""

    async def metrics(self) -> RouterMetrics:
        """Counters per app and release."""

    async def stop(self) -> None:
        """Stop the router process (used by tests and `conveyor agent --stop-router`)."""
