"""Has a host reached what a step wrote? A pure reading of the agent's last report."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from conveyor.protocol import ObservedApp, ObservedState, ReleaseWeight


class Progress(enum.StrEnum):
    CONVERGED = "converged"
    WAITING = "waiting"
    FAILED = "failed"
    OFFLINE = "offline"


@dataclass(frozen=True)
class HostView:
    """One host as the server knows it: its reported state and whether it is connected."""

    name: str
    online: bool
    applied: int | None
    observed: ObservedState | None

    def app(self, app: str) -> ObservedApp | None:
        if self.observed is None:
            return None
        return next((a for a in self.observed.apps if a.app == app), None)

    def url(self, port: int) -> str | None:
        """Where clients reach this host's router for an app listening on `port`."""
        if self.observed is None or not self.observed.address:
            return None
        address = self.observed.address
        if ":" in address:
            address = f"[{address}]"
        return f"http://{address}:{port}"


def host_progress(
    view: HostView, app: str, written: int, targets: list[ReleaseWeight]
) -> tuple[Progress, str | None]:
    """Where one host stands against the generation a step wrote for it."""
    if not view.online:
        return Progress.OFFLINE, f"host {view.name} is not connected"
    observed = view.observed
    seen = observed is not None and observed.generation >= written
    found = view.app(app)
    if seen and found is not None:
        for target in targets:
            release = next((r for r in found.releases if r.release == target.release), None)
            if release is None:
                continue
            migration = release.migration
            if (
                target.migrate
                and migration is not None
                and migration.id == target.migrate
                and migration.state == "failed"
            ):
                output = migration.output.strip()
                return Progress.FAILED, (
                    f"{migration_key(target.migrate)} failed on {view.name} "
                    f"(exit {migration.exit_code})" + (f":\n{output}" if output else "")
                )
            if release.phase == "failed":
                return Progress.FAILED, (
                    f"release {target.release} failed on {view.name}: {release.error or 'failed'}"
                )
    if not targets:
        # nothing should run there (a first deployment rolled back): the agent has seen it
        return (Progress.CONVERGED, None) if seen else (Progress.WAITING, None)
    if view.applied is not None and view.applied >= written:
        return Progress.CONVERGED, None
    return Progress.WAITING, None


def migration_key(migration: str) -> str:
    """The conveyor.yml key a migration id ran (ids are named by starting.py, contracting.py)."""
    if migration.startswith("contract-"):
        return "migrations.contract"
    if migration.startswith("expand-"):
        return "migrations.expand"
    return "hooks.migrate"
