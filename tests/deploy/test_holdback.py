"""The watch window's holdback as status shows it, and the judge's reference window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.deploy.detail import StepDetail, StepOptions
from conveyor.deploy.holdback import holdback_of
from conveyor.deploy.judging import deployment_reference, reference_window
from conveyor.protocol import ReleaseCounters, StepControl
from conveyor.store.models import Deployment, DeploymentStep

NOW = 1_800_000_000.0


def step(
    position: int, kind: str, weight: int | None, state: str, detail: StepDetail | None = None
) -> DeploymentStep:
    return DeploymentStep(
        id=position + 1,
        position=position,
        kind=kind,
        name=kind,
        weight=weight,
        state=state,
        detail=(detail or StepDetail()).model_dump_json(),
    )


def deployment(*steps: DeploymentStep, state: str = "running") -> Deployment:
    return Deployment(state=state, previous_release="old-1", steps=list(steps))


WATCHING = StepDetail(options=StepOptions(pause=600.0, analyse=True), watch_from=NOW - 100)


@pytest.mark.parametrize(
    ("d", "share", "left"),
    [
        (
            deployment(
                step(0, "batch", 100, "succeeded"), step(1, "monitor", 95, "running", WATCHING)
            ),
            5,
            500,
        ),
        (
            deployment(
                step(0, "monitor", 80, "running", StepDetail(options=StepOptions(pause=60)))
            ),
            20,
            None,
        ),
        (
            deployment(step(0, "monitor", 95, "succeeded"), step(1, "switch", 100, "running")),
            None,
            None,
        ),
        (deployment(step(0, "monitor", 100, "running", WATCHING)), None, None),  # holdback: 0
        (deployment(step(0, "weight", 50, "running", WATCHING)), None, None),  # a canary step
        (deployment(step(0, "monitor", 95, "failed"), state="rolling_back"), None, None),
        (None, None, None),
    ],
)
def test_the_holdback_shows_while_the_window_runs_and_not_after(
    d: Deployment | None, share: int | None, left: float | None
) -> None:
    found = holdback_of(d, NOW)
    if share is None:
        assert found is None
        return
    assert found is not None and found.share == share and found.release == "old-1"
    if left is None:
        assert found.until is None  # the hosts have not converged: the clock has not started
    else:
        assert found.until == datetime.fromtimestamp(NOW + left, UTC).replace(tzinfo=None)


def test_a_paused_window_keeps_its_time() -> None:
    paused = WATCHING.model_copy(
        update={"control": StepControl(paused_by="dan", paused_at=NOW - 50)}
    )
    found = holdback_of(deployment(step(0, "monitor", 95, "running", paused)), NOW)
    assert found is not None and found.until is not None


def test_the_reference_is_what_the_previous_release_served_since_the_deployment_began() -> None:
    start = ReleaseCounters(requests=10_000, errors_5xx=100)
    first = step(0, "batch", 100, "succeeded", StepDetail(reference=start, reference_at=NOW))
    d = deployment(first, step(1, "monitor", 95, "running"))
    assert deployment_reference(d) == start
    now = ReleaseCounters(requests=10_600, errors_5xx=103)
    window = reference_window(deployment_reference(d), now)
    assert window is not None and (window.requests, window.errors_5xx) == (600, 3)
    # no reading (the source failed, or no previous release): no reference, never its life
    assert deployment_reference(deployment(step(0, "batch", 100, "running"))) is None
    assert reference_window(None, now) is None
