"""The judge in real deployments: canary steps compared with the baseline (the watch window:
test_holdback.py).

Real server, two agents with their routers on 127.0.0.71-72, the sample app under
load on both routers. The analysis has no error-rate ceiling: only the sequential
comparison with the baseline can fail these canaries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"web-1": "127.0.0.71", "web-2": "127.0.0.72"}
ENDED = ("succeeded", "failed", "cancelled", "superseded")

CANARY = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 25s
    analysis: {compare: baseline, min_requests: 100}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def deployment_of(fleet: Fleet, run_id: int) -> dict[str, Any] | None:
    found = [d for d in fleet.server.get("/api/deployments?app=sample") if d["run"] == run_id]
    return fleet.server.get(f"/api/deployments/{found[0]['id']}") if found else None


def push(fleet: Fleet, label: str, environments: str, **config: Any) -> int:
    fleet.commit(label, environments, **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    return int(run["id"])


def ended(fleet: Fleet, run_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        d = deployment_of(fleet, run_id)
        return d if d and d["state"] in ENDED else None

    result: dict[str, Any] = wait_for(done, timeout=240, interval=0.5)
    return result


def serving_everywhere(fleet: Fleet, release_id: str) -> None:
    for host in HOSTS:
        assert fleet.routed(host) == {release_id: 100}, (host, fleet.agents[host].app("sample"))


def evidence(step: dict[str, Any], check: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in step["judgement"]["evidence"] if e["check"] == check)
    return found


def test_the_judge_promotes_an_identical_release_and_rolls_back_one_with_2pp_more_5xx(
    fleet: Fleet,
) -> None:
    # 0.5% 5xx on the baseline, 2.5% on the bad canary: +2 percentage points
    v1 = ended(fleet, push(fleet, "v1", CANARY, error_rate=0.005))
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=8, rate=40) as load:
        same = ended(fleet, push(fleet, "v2", CANARY, error_rate=0.005))
        assert same["state"] == "succeeded", same
        judged = [s for s in same["steps"] if s.get("judgement")]
        assert [s["judgement"]["verdict"] for s in judged] == ["pass"], same["steps"]
        errors = evidence(judged[0], "errors vs baseline")
        assert errors["verdict"] != "fail" and errors["baseline_requests"] > 0
        assert errors["statistic"] < errors["threshold"]
        serving_everywhere(fleet, same["release"])

        # a longer pause for the bad one: at 25 s (10 of them the warm-up) the evidence
        # reached 112 of the 143 needed once, and the step ended as passed
        bad = ended(fleet, push(fleet, "v3", CANARY.replace("25s", "45s"), error_rate=0.025))
        assert bad["state"] == "failed", bad
        assert "analysis failed: 5xx: canary" in bad["reason"], bad["reason"]
        failed = next(s for s in bad["steps"] if s["state"] == "failed")
        assert failed["weight"] == 50  # before 100%
        worse = evidence(failed, "errors vs baseline")
        assert worse["verdict"] == "fail" and worse["statistic"] >= worse["threshold"]
        assert worse["canary_rate"] > worse["baseline_rate"]
        assert bad["steps"][-1]["kind"] == "rollback"
        serving_everywhere(fleet, same["release"])
    result = load.result
    assert not result.errors, result.errors[:5]
    print(
        f"identical: {errors['canary_events']}/{errors['canary_requests']} 5xx vs baseline "
        f"{errors['baseline_events']}/{errors['baseline_requests']}, e-value "
        f"{errors['statistic']:.3g} < {errors['threshold']:.0f}: promoted\n"
        f"+2 pp: {worse['canary_events']}/{worse['canary_requests']} 5xx vs baseline "
        f"{worse['baseline_events']}/{worse['baseline_requests']}, e-value "
        f"{worse['statistic']:.3g} >= {worse['threshold']:.0f} after "
        f"{failed['duration']:.1f} s at 50%: rolled back"
    )


# the watch window (a release turning bad in it, shared trouble) is tests/e2e/test_holdback.py's:
# judged against the previous release's holdback at the same time
