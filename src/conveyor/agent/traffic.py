"""Which routing an app gets on this host: a pure decision from its releases' phases.

The router gets the desired weights only once every release that should take traffic
is healthy, so a release that never gets healthy changes nothing users see: until
then the previous routing is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.agent.lifecycle import Phase
from conveyor.agent.routing.spec import RouteSpec, Target
from conveyor.protocol import DesiredApp, DesiredRelease

__all__ = ["Hold", "Release", "Route", "plan_route"]


@dataclass(frozen=True)
class Release:
    """What the agent knows of one release of the app, for routing."""

    phase: Phase
    port: int | None  # its instance's port; None without an instance
    error: str | None = None


@dataclass(frozen=True)
class Hold:
    """The previous routing is kept; `error` says why, when a release failed."""

    error: str | None


@dataclass(frozen=True)
class Route:
    """The routing to apply; `top` is the release with the largest weight (the current one)."""

    spec: RouteSpec
    top: DesiredRelease


def plan_route(
    app: DesiredApp, releases: Mapping[str, Release], bind: str, http_port: int = 80
) -> Hold | Route:
    """`http_port`: the host's shared port, where apps with domains are served."""
    weighted = [r for r in app.releases if r.weight > 0]
    ready = {
        name: found
        for name, found in releases.items()
        if found.phase is Phase.HEALTHY and found.port is not None
    }
    if not weighted or any(r.release not in ready for r in weighted):
        failed = [
            (r.release, found.error)
            for r in weighted
            if (found := releases.get(r.release)) is not None and found.phase is Phase.FAILED
        ]
        error = "; ".join(f"{release}: {error}" for release, error in failed)
        return Hold(error + "; the previous routing is kept" if failed else None)
    first = weighted[0].service
    targets = [
        Target(release=r.release, port=port, weight=r.weight)
        for r in app.releases
        if r.release in ready and (port := ready[r.release].port) is not None
    ]
    spec = RouteSpec(
        app=app.app,
        port=http_port if first.domains else first.port,
        bind=bind,
        targets=targets,
        sticky=app.sticky,
        flags=app.flags,
        drain_timeout=first.drain,
        domains=first.domains,
        path_prefix=first.path_prefix,
        strip_prefix=first.strip_prefix,
    )
    return Route(spec=spec, top=max(weighted, key=lambda r: r.weight))
