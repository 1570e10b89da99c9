"""The holdback of a watch window: the previous release's share while the window runs."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.deploy.control import left
from conveyor.deploy.detail import read_detail
from conveyor.protocol import Holdback, StepControl
from conveyor.store.models import Deployment


def holdback_of(d: Deployment | None, now: float) -> Holdback | None:
    """A deployment's running watch window with a share on the previous release, if any.

    The monitor step's weight is the new release's share: what is left is held back
    (deploy/plan.py writes the previous release at 100 − weight beside it). Once the
    window ends, the next step gives the new release all of it: no holdback then.
    """
    if d is None or d.previous_release is None or d.state not in ("running", "aborting"):
        return None
    step = next((s for s in d.steps if s.state == "running"), None)
    if step is None or step.kind != "monitor" or step.weight is None or step.weight >= 100:
        return None
    detail = read_detail(step)
    until = None
    if detail.watch_from is not None:
        remaining = left(
            detail.options.pause, detail.watch_from, detail.control or StepControl(), now
        )
        until = datetime.fromtimestamp(now + remaining, UTC)
    return Holdback(release=d.previous_release, share=100 - step.weight, until=until)
