"""What the agent reports to the server: each release's phase and weight, per app."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from conveyor.agent.lifecycle import Phase
from conveyor.agent.routing.spec import RouteSpec
from conveyor.agent.runtime import ReleaseRuntime
from conveyor.protocol import (
    DesiredState,
    MigrationResult,
    ObservedApp,
    ObservedRelease,
)

__all__ = ["converged", "observed_apps"]


def _weight(applied: RouteSpec | None, release: str) -> int:
    return next((t.weight for t in (applied.targets if applied else []) if t.release == release), 0)


def _release(rt: ReleaseRuntime, weight: int, migration: MigrationResult | None) -> ObservedRelease:
    instance = rt.instance
    return ObservedRelease(
        release=rt.release,
        phase=rt.phase.value,  # mypy checks these are protocol.ReleasePhase's strings
        weight=weight,
        instances=1 if instance is not None else 0,
        port=instance.port if instance else None,
        pid=instance.pid if instance else None,
        restarts=instance.restarts if instance else 0,
        error=rt.error,
        migration=migration,
    )


def observed_apps(
    runtimes: Mapping[tuple[str, str], ReleaseRuntime],
    applied: Mapping[str, RouteSpec],
    migration: Callable[[str, str], MigrationResult | None],
) -> dict[str, ObservedApp]:
    """Per app, its releases as they run here (routing, error and current are left to fill)."""
    apps: dict[str, ObservedApp] = {}
    for (app, release), rt in sorted(runtimes.items()):
        obs = apps.setdefault(app, ObservedApp(app=app))
        obs.releases.append(
            _release(rt, _weight(applied.get(app), release), migration(app, release))
        )
    return apps


def converged(
    desired: DesiredState | None,
    runtimes: Mapping[tuple[str, str], ReleaseRuntime],
    routed: Mapping[str, bool],
) -> bool:
    """Every desired app is routed, all its releases healthy, and none of its others drains."""
    if desired is None:
        return False
    return all(
        routed.get(a.app, False)
        and all(
            (found := runtimes.get((a.app, r.release))) is not None and found.phase is Phase.HEALTHY
            for r in a.releases
        )
        and not any(
            other.app == a.app and other.phase is Phase.DRAINING for other in runtimes.values()
        )
        for a in desired.apps
    )
