"""The watch window's holdback in real deployments: shared trouble is not blamed on the new
release, trouble of its own is, and the holdback's share shows while the window runs.

Real server, two agents with their routers on 127.0.42.1-2, the sample app under load on
both routers. The analysis has no ceiling: only the comparison with the previous release
(the holdback, written 5% and sized to 30% as the window starts: a rolling deployment has
no judged step to measure its traffic, and a short window needs it) can fail the window,
and from its first second: no warm-up (tests/e2e/test_warmup.py has its own), which would
leave a third of this short window uncompared, the blips in it unjudged.
The 5xx are switched by files the sample app reads at each request: one both releases
read (a shared blip, a database's say), one only the new release reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"web-1": "127.0.42.1", "web-2": "127.0.42.2"}
ENDED = ("succeeded", "failed", "cancelled", "superseded")
FIRST = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: rolling
    batch: 2
"""
WATCHED = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: rolling
    batch: 2
    analysis: {compare: baseline, min_requests: 50, warmup: 0s}
    monitor: {duration: 30s, holdback: 5%}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def push(fleet: Fleet, label: str, environments: str, **config: Any) -> int:
    fleet.commit(label, environments, **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    return int(run["id"])


def deployment_of(fleet: Fleet, run_id: int) -> dict[str, Any] | None:
    found = [d for d in fleet.server.get("/api/deployments?app=sample") if d["run"] == run_id]
    return fleet.server.get(f"/api/deployments/{found[0]['id']}") if found else None


def ended(fleet: Fleet, run_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        d = deployment_of(fleet, run_id)
        return d if d and d["state"] in ENDED else None

    result: dict[str, Any] = wait_for(done, timeout=240, interval=0.5)
    return result


def judged_window(fleet: Fleet, run_id: int) -> dict[str, Any]:
    """The deployment once its watch window runs and the judge has looked at it."""

    def watching() -> dict[str, Any] | None:
        d = deployment_of(fleet, run_id)
        steps = d["steps"] if d else []
        running = [s for s in steps if s["kind"] == "monitor" and s["state"] == "running"]
        return d if running and running[0].get("judgement") else None

    found: dict[str, Any] = wait_for(watching, timeout=180, interval=0.5)
    return found


def holdback(fleet: Fleet) -> dict[str, Any] | None:
    [app] = fleet.server.get("/api/status?app=sample")
    [env] = [e for e in app["environments"] if e["name"] == "production"]
    found: dict[str, Any] | None = env.get("holdback")
    return found


def window(d: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in d["steps"] if s["kind"] == "monitor")
    return found


def evidence(step: dict[str, Any], check: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in step["judgement"]["evidence"] if e["check"] == check)
    return found


def blip(fleet: Fleet, switch: Path, run_id: int, load: LoadGenerator, requests: int) -> None:
    """30% 5xx while `requests` more requests are answered (or the deployment ends)."""
    switch.write_text("0.3")
    try:
        target = load.result.sent + requests
        wait_for(
            lambda: (
                load.result.sent >= target
                or (deployment_of(fleet, run_id) or {}).get("state") in ENDED
            ),
            timeout=60,
            interval=0.2,
        )
    finally:
        switch.unlink()


def test_a_shared_blip_is_not_blamed_on_the_new_release_and_the_holdback_shows(
    fleet: Fleet, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-5xx"  # every instance of both releases reads it
    v1 = ended(fleet, push(fleet, "v1", FIRST, error_rate=0.01, error_rate_file=str(shared)))
    assert v1["state"] == "succeeded", v1
    # one client a router: no request waits for another in an instance, so the one taking
    # 70% is not slower than the one taking 30% (latency that grows with load would be
    # the new release's to bear: see the README on the holdback)
    # paced (100 a second each): an unpaced client takes a core of a loaded machine
    with LoadGenerator(fleet.urls(), clients=2, rate=100) as load:
        run_id = push(fleet, "v2", WATCHED, error_rate=0.01, error_rate_file=str(shared))
        d = judged_window(fleet, run_id)
        # the previous release keeps 30% on every host, in the API, the CLI and the page
        assert "30% held back on the previous release" in window(d)["name"], window(d)
        assert "holdback raised from 5% to 30% (no traffic measured" in window(d)["log"]
        for host in HOSTS:
            assert fleet.routed(host) == {d["release"]: 70, v1["release"]: 30}
        shown = holdback(fleet)
        assert shown is not None and shown["share"] == 30, shown
        assert shown["release"] == v1["release"] and shown["until"]
        status = fleet.server.cli("status", "sample")
        said = " ".join(status.stdout.split())  # its cell may wrap
        assert "holdback 30% on" in said and f"{v1['release']} until" in said, status.stdout
        with httpx.Client(base_url=fleet.server.url, timeout=30) as http:
            signed = http.post("/login", data={"token": fleet.server.token, "next": "/"})
            assert signed.status_code == 303
            page = http.get("/apps/sample/environments/production").text
        assert re.search(r'data-holdback="30"', page), page
        assert f"stays on <code>{v1['release']}</code>" in page

        blip(fleet, shared, run_id, load, requests=1500)  # both releases at 30% for a while
        same = ended(fleet, run_id)
        assert same["state"] == "succeeded", (same["reason"], window(same).get("judgement"))
        # the window ended: the holdback is gone, the new release takes everything
        assert holdback(fleet) is None
        for host in HOSTS:
            wait_for(lambda h=host: fleet.routed(h) == {same["release"]: 100}, timeout=30)  # type: ignore[misc]
    assert same["steps"][-1]["kind"] == "switch", same["steps"]
    errors = evidence(window(same), "errors vs baseline")
    # what it was compared with is what the previous release served in the window
    assert errors["baseline_requests"] > 0 and errors["baseline_events"] > 0, errors
    assert errors["statistic"] < errors["threshold"]
    result = load.result
    assert not result.errors, result.errors[:5]
    print(
        f"shared blip: {errors['summary']}; "
        f"5xx served: {dict(result.failed_releases)} of {dict(result.releases)}"
    )


def test_trouble_of_the_new_release_alone_is_rolled_back_through_the_holdback(
    fleet: Fleet, tmp_path: Path
) -> None:
    shared, own = tmp_path / "shared-5xx", tmp_path / "own-5xx"
    v1 = ended(fleet, push(fleet, "v1", FIRST, error_rate=0.01, error_rate_file=str(shared)))
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=2, rate=100) as load:  # as above
        run_id = push(fleet, "v2", WATCHED, error_rate=0.01, error_rate_file=str(own))
        judged_window(fleet, run_id)
        assert holdback(fleet) is not None
        blip(fleet, own, run_id, load, requests=1500)  # the new release alone at 30%
        bad = ended(fleet, run_id)
        assert holdback(fleet) is None
    assert bad["state"] == "failed", bad
    assert bad["reason"].startswith("monitor failed: 5xx: canary"), bad["reason"]
    monitor = window(bad)
    assert monitor["state"] == "failed"
    worse = evidence(monitor, "errors vs baseline")
    assert worse["verdict"] == "fail" and worse["statistic"] >= worse["threshold"]
    assert worse["baseline_requests"] > 0  # judged against the holdback, at the same time
    assert worse["canary_rate"] > worse["baseline_rate"]
    assert bad["steps"][-1]["kind"] == "rollback" and bad["steps"][-1]["state"] == "succeeded"
    for host in HOSTS:
        assert fleet.routed(host) == {v1["release"]: 100}
    result = load.result
    assert not result.errors, result.errors[:5]
    print(f"own trouble: rolled back after {monitor['duration']:.1f} s: {worse['summary']}")
