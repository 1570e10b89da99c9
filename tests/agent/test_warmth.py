"""Which retired releases stay warm on a host, as a table."""

from __future__ import annotations

import pytest

from conveyor.agent.warmth import Retired, stay_warm

R = Retired


@pytest.mark.parametrize(
    ("retired", "count", "warm"),
    [
        ([], 1, set()),
        ([R("v1", 10.0)], 1, {"v1"}),
        ([R("v1", 10.0)], 0, set()),  # keep_warm_releases: 0 keeps none
        # four quick deploys: v1, v2, v3 retired in turn; only the last one stays warm
        ([R("v1", 10.0), R("v2", 11.0), R("v3", 12.0)], 1, {"v3"}),
        ([R("v3", 12.0), R("v1", 10.0), R("v2", 11.0)], 1, {"v3"}),  # order given is no matter
        ([R("v1", 10.0), R("v2", 11.0), R("v3", 12.0)], 2, {"v2", "v3"}),
        ([R("v1", 10.0), R("v2", 11.0)], 5, {"v1", "v2"}),  # fewer than the count: all
        # a rollback retires the newer release: it is the one kept, whatever its name
        ([R("v1", 10.0), R("v3", 20.0)], 1, {"v3"}),
        ([R("v3", 10.0), R("v1", 20.0)], 1, {"v1"}),
        # adopted after an agent restart, all retire at once: the instance started last wins
        ([R("v1", 5.0, started_at=100.0), R("v2", 5.0, started_at=200.0)], 1, {"v2"}),
        ([R("v2", 5.0, started_at=200.0), R("v1", 5.0, started_at=100.0)], 1, {"v2"}),
        # a release that never was current (a failed preview, a canary rolled back) is no
        # rollback target: it does not push the previous release out
        ([R("v1", 10.0), R("broken", None)], 1, {"v1"}),
        ([R("broken", None)], 1, set()),
        ([R("v1", 10.0), R("v2", 12.0), R("canary", None)], 2, {"v1", "v2"}),
        # and with nothing else to go by, the name decides, never the order given
        ([R("a", 5.0), R("b", 5.0)], 1, {"b"}),
        ([R("b", 5.0), R("a", 5.0)], 1, {"b"}),
        ([R("v1", 10.0)], -1, set()),
    ],
)
def test_stay_warm(retired: list[Retired], count: int, warm: set[str]) -> None:
    assert stay_warm(retired, count) == warm
