"""analysis.warmup in a real deployment: a release slow only for its first requests (a cache
warming up) is promoted with a warm-up, and rolled back as slower without one.

Real server, one agent with its embedded router on 127.0.43.1, the sample app under load.
The canary step is judged by the comparison with the baseline only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"web-1": "127.0.43.1"}
ENDED = ("succeeded", "failed", "cancelled", "superseded")
# the canary's first 150 requests take 50 ms more (some seconds at 50% of 8 clients); a
# 15-s warm-up covers them on a loaded machine too, and leaves 10 s of the step compared
CANARY = """
environments:
  production:
    hosts: [web-1]
    strategy: canary
    steps: [50, 100]
    step_pause: 25s
    analysis: {{compare: baseline, min_requests: 100, warmup: {warmup}}}
"""
COLD = {"slow_requests": 150, "slow_delay": 0.05}


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def deploy(fleet: Fleet, label: str, warmup: str, **config: Any) -> dict[str, Any]:
    fleet.commit(label, CANARY.format(warmup=warmup), **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run

    def done() -> dict[str, Any] | None:
        found = [
            d for d in fleet.server.get("/api/deployments?app=sample") if d["run"] == run["id"]
        ]
        d = fleet.server.get(f"/api/deployments/{found[0]['id']}") if found else None
        return d if d and d["state"] in ENDED else None

    result: dict[str, Any] = wait_for(done, timeout=240, interval=0.5)
    return result


def test_a_release_slow_only_while_it_warms_up_is_promoted_with_a_warmup(fleet: Fleet) -> None:
    v1 = deploy(fleet, "v1", "15s")
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=8, rate=40) as load:
        warmed = deploy(fleet, "v2", "15s", **COLD)
        assert warmed["state"] == "succeeded", warmed
        judged = next(s for s in warmed["steps"] if s.get("judgement"))
        checks = {e["check"]: e for e in judged["judgement"]["evidence"]}
        # compared after its warm-up, and found no slower
        assert "warm-up" not in checks, checks
        assert checks["p99 latency vs baseline"]["verdict"] != "fail", checks

        cold = deploy(fleet, "v3", "0s", **COLD)
        assert cold["state"] == "failed", cold
        assert "analysis failed: slower than" in cold["reason"], cold["reason"]
        assert fleet.routed("web-1") == {warmed["release"]: 100}
    assert not load.result.errors, load.result.errors[:5]
    print(f"warm-up 15 s: promoted; none: {cold['reason']}")
