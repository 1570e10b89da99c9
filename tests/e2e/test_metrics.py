"""Router counters, as the agent reports them to the server, judged for real.

A release answering ~5% 5xx beside a healthy one, both under load through the
host's router (each backend): the judge fails the bad one and passes the good one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.agent.routing.spec import ReleaseCounters, RouterMetrics
from conveyor.analysis.judge import Settings, Verdict, judge_window
from conveyor.analysis.window import delta
from conveyor.config import Analysis
from tests.e2e.test_host import World, world_on
from tests.fleet import LoadGenerator
from tests.helpers import ServerProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=["embedded", "haproxy"])
def world(request: pytest.FixtureRequest, server: ServerProcess, tmp_path: Path) -> Iterator[World]:
    with world_on(request.param, server, tmp_path, "127.0.0.4") as w:
        yield w


def _counters(world: World, release: str) -> ReleaseCounters | None:
    raw = world.agent.observed().get("metrics")
    if not raw:
        return None
    app = RouterMetrics.model_validate(raw).apps.get("sample")
    return app.releases.get(release) if app else None


def test_reported_counters_fail_a_release_answering_5xx(world: World) -> None:
    good = world.build("good")
    bad = world.build("bad", error_rate=0.05)
    agent = world.agent.start()
    agent.set("sample", {good: 50, bad: 50})
    agent.wait_routed("sample", {good: 50, bad: 50})
    before = {r: _counters(world, r) for r in (good, bad)}
    with LoadGenerator(world.url, clients=16, max_requests=3000) as load:
        wait_for(lambda: load.result.sent >= 3000, timeout=120)
    sent = load.result.sent

    def reported() -> dict[str, ReleaseCounters] | None:
        now = {r: _counters(world, r) for r in (good, bad)}
        if any(c is None for c in now.values()):
            return None
        windows = {r: delta(before[r], c) for r, c in now.items() if c is not None}
        return windows if sum(w.requests for w in windows.values()) >= sent else None

    windows = wait_for(reported, timeout=30, interval=0.5)
    analysis = Analysis.model_validate({"error_rate": "1%", "p99": "2s", "min_requests": 200})
    assert judge_window(windows[good], Settings.of(analysis)).verdict == Verdict.PASS
    verdict = judge_window(windows[bad], Settings.of(analysis))
    assert verdict.verdict == Verdict.FAIL and "error rate" in verdict.reasons[0]
    assert 0.02 < (verdict.error_rate or 0) < 0.10
    # the load generator saw the same 5xx the router counted for the bad release
    assert load.result.statuses[500] == windows[bad].errors_5xx
    assert windows[good].errors_5xx == 0
