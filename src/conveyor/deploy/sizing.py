"""The watch window's holdback, sized from the traffic when the window begins.

A holdback is the judge's control: what the previous release serves beside the new one
in the same seconds, so that shared trouble cancels out. The judge can tell no more than
the control's requests let it: at 200 req/s, 5% is 10 req/s, and a release turning 2
points of 5xx worse in the window then takes minutes to catch (the best fixed-sample
test, told the very minute, catches it within that minute 82% of the time; bench/
judge_deploy.py). So when the window begins, the share is raised from `monitor.holdback`
toward `monitor.holdback_max` until the previous release would serve CONTROL requests a
second of the traffic just measured (the last judged step's), and no further.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from conveyor.deploy.detail import read_detail
from conveyor.deploy.ledger import dump_targets, load_targets
from conveyor.deploy.plan import Targets, held_back
from conveyor.protocol import SeriesPoint
from conveyor.store.models import Deployment, DeploymentStep

# requests a second of the previous release that let the judge catch a release turning
# +2 points of 5xx worse in the window (1% -> 3%) within about a minute (bench/judge_deploy.py:
# 99.8-100% at 60 req/s of control, 91-96% at 40)
CONTROL = 60.0
# seconds of a step's chart a measure of its traffic needs: fewer are a guess
MEASURED_FOR = 10.0


def measured_rps(points: Sequence[SeriesPoint]) -> float | None:
    """Both releases' requests a second over a judged step's chart (None: too short)."""
    both = [p for p in points if p.canary is not None and p.baseline is not None]
    if len(both) < 2 or both[-1].at - both[0].at < MEASURED_FOR:
        return None
    first, last = both[0], both[-1]
    assert first.canary and first.baseline and last.canary and last.baseline
    served = last.canary.requests + last.baseline.requests
    served -= first.canary.requests + first.baseline.requests
    return max(0.0, served / (last.at - first.at))


def sized_holdback(rps: float | None, least: int, most: int, control: float = CONTROL) -> int:
    """The holdback's percent of traffic for `control` requests a second of `rps`, within
    [least, most]; with no measure (no judged step before), `most`."""
    if most <= least:
        return least
    if rps is None or rps <= 0:
        return most
    return min(most, max(least, math.ceil(100 * control / rps - 1e-9)))


def resized(targets: Targets, release: str, share: int) -> Targets:
    """A watch window's targets with `share` percent on the previous release of each host
    that has one beside `release` (hosts serving `release` alone stay as they are)."""
    out: Targets = {}
    for host, items in targets.items():
        if len(items) < 2 or all(item.release == release for item in items):
            out[host] = list(items)
            continue
        out[host] = [
            item.model_copy(update={"weight": 100 - share if item.release == release else share})
            for item in items
        ]
    return out


def last_measure(steps: Iterable[DeploymentStep], before: int) -> float | None:
    """The traffic of the latest judged step before position `before` (None: none)."""
    for step in sorted(steps, key=lambda s: s.position, reverse=True):
        if step.position >= before:
            continue
        rps = measured_rps(read_detail(step).series)
        if rps is not None:
            return rps
    return None


def size_window(d: Deployment, step: DeploymentStep) -> str | None:
    """A watch window about to begin, its holdback raised as far as the traffic asks (its
    targets, weight and name rewritten on the record); the log line saying so, if raised."""
    if step.kind != "monitor" or step.weight is None or step.weight >= 100:
        return None
    least, most = 100 - step.weight, read_detail(step).options.holdback_max
    if most <= least:
        return None
    rps = last_measure(d.steps, step.position)
    share = sized_holdback(rps, least, most)
    if share == least:
        return None
    step.targets = dump_targets(resized(load_targets(step.targets), d.release_id, share))
    step.weight = 100 - share
    step.name = step.name.split(f", {least}% held back")[0] + held_back(share, rps)
    measured = f"{rps:.0f} req/s measured in the last judged step" if rps else "no traffic measured"
    return (
        f"holdback raised from {least}% to {share}% ({measured}; {CONTROL:g} req/s on the "
        f"previous release let the judge catch trouble within a minute, {most}% at most)"
    )
