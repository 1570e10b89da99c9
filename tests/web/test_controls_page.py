"""The Environment page's controls in a real browser: a canary paused, resumed and
promoted from its buttons; the rollback button named by where it leads.

One server and one host for the module (web-1 on 127.0.8.1, production), the
sample app under a light load. The tests tell one story: v1 serves; v2's canary
is paused, resumed, promoted one step and then to 100% from the page; v3 fails
(its health check answers 500), and the rollback button names v1, served before
v2, never v3; rolled back from the page to v1, the same button says "Deploy v2
again" rather than "Roll back".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, running_server, wait_for
from tests.web.browser import Visitor, make_token
from tests.web.checks import no_overflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"web-1": "127.0.8.1"}
PRODUCTION = "/apps/sample/environments/production"
PLAIN = """
environments:
  production:
    hosts: [web-1]
"""
# long pauses: no step ends by itself while the test drives it
CANARY = """
environments:
  production:
    hosts: [web-1]
    strategy: canary
    steps: [10, 25, 50, 100]
    step_pause: 5m
    analysis: {compare: baseline, min_requests: 20}
"""


@dataclass
class Story:
    v1: str = ""
    v2: str = ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("web-controls") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path_factory.mktemp("fleet"), HOSTS) as f:
        yield f


@pytest.fixture(scope="module")
def story(fleet: Fleet) -> Story:
    run = push(fleet, "v1", PLAIN)
    ended = wait_ended(fleet.server, run)
    assert ended["state"] == "succeeded", ended
    return Story(v1=ended["release"])


@pytest.fixture(scope="module")
def dan(fleet: Fleet, browser: Any) -> Iterator[Visitor]:
    """A deployer at 1280 px who accepts every confirmation."""
    visitor = Visitor(browser, fleet.server).sign_in(make_token(fleet.server, "dan", "deployer"))
    visitor.page.on("dialog", lambda d: d.accept())
    yield visitor
    visitor.close()


def push(fleet: Fleet, label: str, environments: str, **config: Any) -> int:
    fleet.commit(label, environments, **config)
    return int(fleet.server.post("/api/apps/sample/runs", {})["id"])


def deployment_of(server: ServerProcess, run: int) -> dict[str, Any] | None:
    found = [d for d in server.get("/api/deployments?app=sample") if d["run"] == run]
    return server.get(f"/api/deployments/{found[0]['id']}") if found else None


def wait_ended(server: ServerProcess, run: int) -> Any:
    def ended() -> Any:
        d = deployment_of(server, run)
        return d if d and d["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, timeout=240, interval=0.5)


def step_named(d: dict[str, Any], weight: int) -> dict[str, Any]:
    (found,) = [s for s in d["steps"] if s["kind"] == "weight" and s["weight"] == weight]
    return found


def click(visitor: Visitor, action: str, says: str) -> None:
    """Press the form's button; the server's answer shows in #flash."""
    page = visitor.page
    page.evaluate("document.getElementById('flash').innerHTML = ''")
    page.click(f"form[data-action={action}] button")
    page.wait_for_selector("#flash p", timeout=30_000)
    text = page.inner_text("#flash")
    assert says in text, text


def shoot(visitor: Visitor, name: str) -> None:
    no_overflow(visitor)
    visitor.shoot(name)


def test_a_canary_is_paused_resumed_and_promoted_from_the_page(
    fleet: Fleet, story: Story, dan: Visitor, browser: Any
) -> None:
    server = fleet.server
    page = dan.page
    with LoadGenerator(fleet.urls("web-1"), clients=2, rate=20) as load:
        run = push(fleet, "v2", CANARY)
        dan.goto(PRODUCTION)
        # the first canary step: promote, promote to 100%, pause; no resume yet
        page.wait_for_selector("form[data-action=step-pause]", timeout=180_000)
        d = deployment_of(server, run)
        assert d is not None
        story.v2 = d["release"]
        assert "Promote now: 25% of traffic next" in page.inner_text(
            "form[data-action=step-promote]"
        )
        assert page.locator("form[data-action=step-promote-full]").count() == 1
        assert page.locator("form[data-action=step-resume]").count() == 0
        page.wait_for_selector("#deployment .time-left")
        assert "left in 10% of traffic" in page.inner_text("#deployment .time-left")

        click(dan, "step-pause", "Paused by dan")
        page.wait_for_selector("form[data-action=step-resume]")
        page.wait_for_function(
            "() => document.querySelector('#deployment .time-left')"
            "?.innerText.includes('paused by dan')"
        )
        d = server.get(f"/api/deployments/{d['id']}")
        ten = step_named(d, 10)
        assert ten["state"] == "running" and ten["control"]["paused_by"] == "dan"
        assert [a["action"] for a in ten["control"]["actions"]] == ["pause"]
        assert "paused (the judge still watches" in ten["log"]
        shoot(dan, "controls-paused-desktop")
        phone = Visitor(browser, server, phone=True).sign_in(make_token(server, "pat", "deployer"))
        try:
            phone.goto(PRODUCTION)
            phone.page.wait_for_selector("form[data-action=step-resume]")
            shoot(phone, "controls-paused-phone")
        finally:
            phone.close()

        click(dan, "step-resume", "Resumed by dan")
        page.wait_for_selector("form[data-action=step-pause]")
        # the CLI does the same, and the page, never reloaded, follows
        paused = server.cli("pause", "sample", "production")
        assert paused.returncode == 0, paused.stderr
        assert "paused: the judge still watches and rolls back on a failure" in paused.stdout
        page.wait_for_selector("form[data-action=step-resume]")
        again = server.cli("pause", "sample", "production")
        assert again.returncode != 0 and "already paused by admin" in again.stderr, again
        resumed = server.cli("resume", "sample", "production")
        assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed
        page.wait_for_selector("form[data-action=step-pause]")

        # promote: the 10% step ends now as passed, the judge's record says by whom
        click(dan, "step-promote", "Promoted by dan")

        def at_25() -> Any:
            found = server.get(f"/api/deployments/{d['id']}")
            return found if step_named(found, 25)["state"] == "running" else None

        d = wait_for(at_25, timeout=60, interval=0.3)
        ten = step_named(d, 10)
        assert ten["state"] == "succeeded" and ten["reason"] == "promoted by dan"
        actions = [(a["action"], a["by"]) for a in ten["control"]["actions"]]
        assert actions == [
            ("pause", "dan"),
            ("resume", "dan"),
            ("pause", "admin (CONVEYOR_ADMIN_TOKEN)"),
            ("resume", "admin (CONVEYOR_ADMIN_TOKEN)"),
            ("promote", "dan"),
        ]
        assert ten["judgement"] is None or ten["judgement"]["promoted_by"] == "dan"
        assert "promoted by dan: the step ends as passed" in ten["log"]
        # the page's timeline says who did what to the step, and when
        page.wait_for_function(
            "() => document.querySelector('.step-controls')?.innerText.includes('promoted by dan')"
        )
        said = page.inner_text(".step-controls")
        assert said.startswith("paused by dan") and "resumed by admin" in said, said

        # promote to 100%: the 50% step is skipped, then 100% and verify as usual
        page.wait_for_function(
            "() => document.querySelector('form[data-action=step-promote] button')"
            "?.innerText.includes('50% of traffic next')"
        )
        click(dan, "step-promote-full", "Promoted to 100% by dan")
        ended = wait_ended(server, run)
        assert ended["state"] == "succeeded", ended
        assert step_named(ended, 50)["state"] == "skipped"
        assert step_named(ended, 50)["reason"] == "skipped: promoted to 100% by dan"
        assert step_named(ended, 100)["state"] == "succeeded"
        assert fleet.routed("web-1") == {story.v2: 100}
    assert not load.result.errors, load.result.errors[:5]
    # the page, never reloaded, drops the canary's controls once it ended
    page.wait_for_function("() => !document.querySelector('form[data-action=step-promote]')")
    # the history lists who did what to the canary, and when
    dan.goto("/apps/sample/history")
    said = page.inner_text(f"tr[data-deployment='{ended['id']}']")
    for line in ("paused by dan at", "resumed by admin", "promoted by dan", "promoted to 100%"):
        assert line in said, said
    assert not dan.errors


def test_the_rollback_button_after_a_failure_and_after_a_manual_rollback(
    fleet: Fleet, story: Story, dan: Visitor
) -> None:
    assert story.v2, "needs the canary of the test before"
    server = fleet.server
    page = dan.page
    run = push(fleet, "v3", PLAIN, health_status=500, health_timeout="3s")
    failed = wait_ended(server, run)
    assert failed["state"] == "failed", failed
    v3 = failed["release"]

    dan.goto(PRODUCTION)
    button = page.locator("form[data-action=rollback] button")
    label = button.inner_text()
    # back to what served before v2, never the release that just failed
    assert label == f"Roll back to {story.v1} (served before {story.v2})", label
    assert v3 not in label
    help_text = page.inner_text(".action-help")
    assert f"every host to {story.v1}" in help_text
    shoot(dan, "controls-after-failure-desktop")

    click(dan, "rollback", f"to {story.v1} started")

    def rolled_back() -> Any:
        found = server.get("/api/deployments?app=sample&kind=rollback")
        return found[0] if found and found[0]["state"] == "succeeded" else None

    wait_for(rolled_back, timeout=120, interval=0.5)
    assert fleet.routed("web-1") == {story.v1: 100}
    # the same button now leads forward to v2: it says so, in the page that updated itself
    page.wait_for_function(
        "() => document.querySelector('form[data-action=rollback] button')"
        f"?.innerText === 'Deploy {story.v2} again'"
    )
    assert "Roll back" not in page.inner_text("form[data-action=rollback] button")
    assert "newer than" in page.inner_text(".action-help")
    shoot(dan, "controls-after-rollback-desktop")
    assert not dan.errors
    # nothing runs: promote says so (exit 2), and a viewer may not even ask
    nothing = server.cli("promote", "sample", "production", "--full")
    assert nothing.returncode == 2, nothing
    assert "no deployment is running in production of sample: nothing to promote" in (
        nothing.stderr
    )
    viewer = make_token(server, "vera", "viewer")
    refused = server.http.post(
        "/api/apps/sample/environments/production/pause",
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert refused.status_code == 403, refused.text
