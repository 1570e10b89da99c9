"""Reading a host's report against what a step wrote: converged, waiting, failed, offline."""

from __future__ import annotations

import pytest

from conveyor.deploy.progress import HostView, Progress, host_progress, migration_key
from conveyor.protocol import (
    MigrationResult,
    ObservedApp,
    ObservedRelease,
    ObservedState,
    ReleaseWeight,
)

NEW = [ReleaseWeight(release="new-1", weight=100)]


def view(
    *,
    online: bool = True,
    applied: int | None = 4,
    generation: int = 5,
    phase: str = "healthy",
    error: str | None = None,
    address: str | None = "127.0.0.9",
) -> HostView:
    observed = ObservedState(
        host="web-1",
        generation=generation,
        address=address,
        apps=[
            ObservedApp(
                app="shop",
                releases=[ObservedRelease(release="new-1", phase=phase, error=error)],  # type: ignore[arg-type]
            )
        ],
    )
    return HostView("web-1", online, applied, observed)


@pytest.mark.parametrize(
    ("host", "targets", "expected"),
    [
        (view(applied=5), NEW, Progress.CONVERGED),
        (view(applied=6), NEW, Progress.CONVERGED),
        (view(applied=4), NEW, Progress.WAITING),
        (view(applied=4, phase="starting"), NEW, Progress.WAITING),
        (view(applied=4, phase="failed", error="exit 3"), NEW, Progress.FAILED),
        # a failure reported for an older generation is not about this step
        (view(applied=3, generation=4, phase="failed"), NEW, Progress.WAITING),
        (view(online=False, applied=5), NEW, Progress.OFFLINE),
        (view(applied=None, generation=5), [], Progress.CONVERGED),
        (view(applied=None, generation=4), [], Progress.WAITING),
    ],
)
def test_host_progress(host: HostView, targets: list[ReleaseWeight], expected: Progress) -> None:
    progress, message = host_progress(host, "shop", 5, targets)
    assert progress == expected
    if expected == Progress.FAILED:
        assert message is not None and "new-1" in message and "exit 3" in message


@pytest.mark.parametrize(
    ("address", "url"),
    [("127.0.0.9", "http://127.0.0.9:8000"), ("::1", "http://[::1]:8000"), (None, None)],
)
def test_router_url(address: str | None, url: str | None) -> None:
    assert view(address=address).url(8000) == url


@pytest.mark.parametrize(
    ("migration", "key"),
    [
        ("deployment-7", "hooks.migrate"),
        ("expand-7", "migrations.expand"),
        ("contract-9", "migrations.contract"),
    ],
)
def test_a_failed_migration_names_the_key_it_ran(migration: str, key: str) -> None:
    failed = ObservedRelease(
        release="r2",
        phase="failed",
        migration=MigrationResult(id=migration, state="failed", exit_code=3, output="no table"),
    )
    observed = ObservedState(
        host="web-1", generation=2, apps=[ObservedApp(app="shop", releases=[failed])]
    )
    view = HostView("web-1", online=True, applied=1, observed=observed)
    target = ReleaseWeight(release="r2", weight=0, migrate=migration)
    assert migration_key(migration) == key
    assert host_progress(view, "shop", 2, [target]) == (
        Progress.FAILED,
        f"{key} failed on web-1 (exit 3):\nno table",
    )
