"""Which retired releases of an app stay warm on a host: the last few, for instant rollback.

A release that stops taking traffic drains, then stays running for `service.keep_warm`
so that a rollback to it is a weight switch. Only the `service.keep_warm_releases` most
recently retired stay warm (one by default): without that bound every rapid deploy
would leave one more warm instance behind. The others stop as soon as they are drained.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Retired", "stay_warm"]


@dataclass(frozen=True)
class Retired:
    """A release of one app that runs on this host but takes no traffic any more."""

    release: str
    retired_at: float  # when it stopped taking traffic (the agent's clock)
    started_at: float = 0.0  # when its instance first started: breaks ties (newer wins)


def stay_warm(retired: Iterable[Retired], count: int) -> frozenset[str]:
    """The releases that stay warm: the `count` retired most recently.

    Equal retire times (instances adopted after an agent restart all retire at once)
    go to the instance started last, then to the release name, so the answer never
    depends on the order the releases are given in.
    """
    if count <= 0:
        return frozenset()
    newest = sorted(retired, key=lambda r: (r.retired_at, r.started_at, r.release), reverse=True)
    return frozenset(r.release for r in newest[:count])
