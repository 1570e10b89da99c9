"""Which retired releases of an app stay warm on a host: the last few, for instant rollback.

A release that stops taking traffic drains, then stays running for `service.keep_warm`
so that a rollback to it is a weight switch. Only the `service.keep_warm_releases`
previous releases stay warm (one by default): the ones that were the app's current
release most recently. Without that bound every rapid deploy would leave one more warm
instance behind. A release that never was current (a preview that failed, a canary
rolled back) is no rollback target: it stops as soon as it is drained, as do the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Retired", "stay_warm"]


@dataclass(frozen=True)
class Retired:
    """A release of one app that runs on this host but takes no traffic any more."""

    release: str
    # when it stopped being the app's current (top-weighted) release, on the agent's clock;
    # None if it never was one
    current_until: float | None
    started_at: float = 0.0  # when its instance first started: breaks ties (newer wins)


def stay_warm(retired: Iterable[Retired], count: int) -> frozenset[str]:
    """The releases that stay warm: the `count` that were current most recently.

    Equal times (instances adopted after an agent restart are all taken as retired at
    once) go to the instance started last, then to the release name, so the answer
    never depends on the order the releases are given in.
    """
    previous = [r for r in retired if r.current_until is not None]
    if count <= 0:
        return frozenset()
    newest = sorted(
        previous, key=lambda r: (r.current_until, r.started_at, r.release), reverse=True
    )
    return frozenset(r.release for r in newest[:count])
