"""The History page and the public status page, on a real fleet's real deployments.

One server and two hosts (an agent and its router each, on 127.0.0.91-92) for the
module; the sample app goes through staging and production twice, then a release
whose health check fails is rolled back in staging.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, running_server, wait_for
from tests.web.browser import Visitor, anonymous, make_token
from tests.web.checks import no_overflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"stage-1": "127.0.0.91", "web-1": "127.0.0.92"}
ENVS = """
environments:
  staging:
    hosts: [stage-1]
  production:
    hosts: [web-1]
"""
SECRET = "s3cr3t-value-of-the-sample-app"
DEPLOYER = "ozymandias"  # a name that appears nowhere else, to look for on the public page
ENDED = ("succeeded", "failed", "cancelled", "superseded")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("history") / "data") as proc:
        yield proc


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path_factory.mktemp("fleet"), HOSTS) as f:
        yield f


def deployments_of(server: ServerProcess, run_id: int) -> list[dict[str, Any]]:
    return [d for d in server.get("/api/deployments?app=sample") if d["run"] == run_id]


def push(fleet: Fleet, label: str, deployments: int, **config: Any) -> dict[str, Any]:
    """A commit through its run and the deployments it starts, until they all ended."""
    server = fleet.server
    fleet.commit(label, ENVS, **config)
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=120)
    assert run["state"] == "succeeded", run

    def ended() -> list[dict[str, Any]] | None:
        found = deployments_of(server, run["id"])
        done = len(found) == deployments and all(d["state"] in ENDED for d in found)
        return found if done else None

    run["deployments"] = wait_for(ended, timeout=150, interval=0.5)
    return run


@pytest.fixture(scope="module")
def releases(fleet: Fleet) -> dict[str, str]:
    """v1 and v2 through staging and production; v3 fails its health check in staging."""
    server = fleet.server
    assert server.http.put("/api/apps/sample/secrets/API_KEY", json={"value": SECRET}).is_success
    v1 = push(fleet, "v1", 2)
    v2 = push(fleet, "v2", 2)
    v3 = push(fleet, "v3", 1, health_status=500, health_timeout="3s")
    assert [d["state"] for d in v1["deployments"] + v2["deployments"]] == ["succeeded"] * 4
    assert v3["deployments"][0]["state"] == "failed"
    return {"v1": v1["release"], "v2": v2["release"], "v3": v3["release"]}


def rows(visitor: Visitor) -> list[str]:
    return visitor.page.locator("#history tbody tr").all_inner_texts()


def test_history_filters_and_redeploys_a_release_that_passed_its_gates(
    server: ServerProcess, browser: Any, releases: dict[str, str]
) -> None:
    v1, v2, v3 = releases["v1"], releases["v2"], releases["v3"]
    deployer = Visitor(browser, server).sign_in(make_token(server, DEPLOYER, "deployer"))
    viewer = Visitor(browser, server, phone=True).sign_in(make_token(server, "vera", "viewer"))
    try:
        page = deployer.page
        deployer.goto("/apps/sample/history")
        assert len(rows(deployer)) == 5
        newest = rows(deployer)[0]
        assert "staging" in newest and v3 in newest and "failed" in newest
        assert "pipeline" in newest
        # Redeploy is offered for v1 only: v2 serves both environments, v3 failed
        offered = page.locator("tr:has(button:text-is('Redeploy'))").all_inner_texts()
        assert len(offered) == 2 and all(v1 in r for r in offered), offered
        no_overflow(deployer)
        deployer.shoot("history-desktop")

        # the filters are a plain GET form that htmx swaps in place
        page.select_option("select[name=environment]", "production")
        page.wait_for_function("() => document.querySelectorAll('#history tbody tr').length === 2")
        assert "environment=production" in page.url
        page.select_option("select[name=environment]", "")
        page.select_option("select[name=state]", "failed")
        page.wait_for_function("() => document.querySelectorAll('#history tbody tr').length === 1")
        assert v3 in rows(deployer)[0]
        page.select_option("select[name=state]", "")
        page.select_option("select[name=trigger]", "api")
        page.wait_for_selector("#history .empty")
        assert "matches these filters" in page.inner_text("#history")

        # a viewer sees the history, and no button
        viewer.goto("/apps/sample/history")
        assert len(rows(viewer)) == 5
        assert viewer.page.locator("button:text-is('Redeploy')").count() == 0
        no_overflow(viewer)
        viewer.shoot("history-phone")

        # a refused deploy shows the server's own reason: v3 never passed staging
        deployer.goto("/apps/sample/history?environment=production")
        row = page.locator("tr", has_text=v1)
        row.locator("input[name=release]").evaluate(f"el => el.value = {v3!r}")
        row.locator("button:text-is('Redeploy')").click()
        with page.expect_navigation():
            row.locator("dialog button.primary").click()
        error = page.locator("#history .error").inner_text()
        assert f"release {v3} has not passed staging" in error, error
        assert "Not deployed" in error

        # the real thing: v1 back to production, after a confirmation that names both
        deployer.goto("/apps/sample/history?environment=production")
        row = page.locator("tr", has_text=v1)
        row.locator("button:text-is('Redeploy')").click()
        dialog = row.locator("dialog")
        text = dialog.inner_text()
        assert f"Deploy release {v1} to production?" in text
        assert f"production serves {v2} now; it goes back to {v1}" in text
        assert "rolling strategy" in text
        no_overflow(deployer)
        deployer.shoot("history-redeploy-desktop")
        with page.expect_navigation():
            dialog.locator("button.primary").click()
        found = re.search(r"/deployments/(\d+)$", page.url)
        assert found is not None, page.url
        started = server.get(f"/api/deployments/{found.group(1)}")
        assert (started["release"], started["environment"]) == (v1, "production")
        assert (started["trigger"], started["triggered_by"]) == ("api", DEPLOYER)
        done = wait_for(
            lambda: (d := server.get(f"/api/deployments/{started['id']}"))["state"] in ENDED and d,
            timeout=120,
            interval=0.5,
        )
        assert done["state"] == "succeeded", done

        # now v2 is the earlier release of production, and may come back in turn
        deployer.goto("/apps/sample/history?environment=production")
        assert v1 in rows(deployer)[0] and f"api by {DEPLOYER}" in rows(deployer)[0]
        offered = page.locator("tr:has(button:text-is('Redeploy'))").all_inner_texts()
        assert len(offered) == 1 and v2 in offered[0], offered
        missing = deployer.goto("/apps/no-such-app/history")
        assert missing.status == 404 and "unknown app" in page.inner_text("main")
        for v in (deployer, viewer):
            assert v.outside_requests() == []
            assert v.errors == []
    finally:
        deployer.close()
        viewer.close()


def test_the_public_status_page_is_opt_in_and_shows_no_host_log_or_secret(
    server: ServerProcess, browser: Any, releases: dict[str, str]
) -> None:
    with anonymous(server) as http:
        hidden = http.get("/status/sample")
        unknown = http.get("/status/no-such-app")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.text == unknown.text  # nothing says the app exists

        opted = server.cli("app", "set", "sample", "--public-status")
        assert opted.returncode == 0, opted.stderr
        assert "public status page /status/sample" in opted.stdout
        r = http.get("/status/sample")
        assert r.status_code == 200
        html = r.text

    # what it shows: each environment's release, and the recent results in a word
    serving = {e["name"]: e["release"] for e in server.get("/api/apps/sample/environments")}
    for env, release in serving.items():
        card = re.search(rf'data-environment="{env}">(.*?)</section>', html, re.S)
        assert card is not None and release in card.group(1), env
        assert "since 20" in card.group(1)
    assert "failed, rolled back" in html and releases["v3"] in html

    # what it never shows: hosts, their addresses, people, reasons, logs, secrets
    leaks = [SECRET, "127.0.0.", *HOSTS, DEPLOYER, "admin", "vera"]
    deployments = server.get("/api/deployments?app=sample&limit=500")
    for d in deployments:
        full = server.get(f"/api/deployments/{d['id']}")
        leaks += [full["reason"] or ""] + [s["reason"] or "" for s in full["steps"]]
        leaks += [line for s in full["steps"] for line in s["log"].splitlines()]
    for run in server.get("/api/runs?app=sample"):
        leaks += [run["reason"] or ""]
        for chunk in server.get(f"/api/runs/{run['id']}/logs"):
            leaks += chunk["text"].splitlines()
    leaks = sorted({x.strip() for x in leaks if len(x.strip()) >= 6})
    assert len(leaks) > 10  # the logs and reasons did have lines to look for
    found = [x for x in leaks if x in html]
    assert found == [], found
    print(f"public status page: none of {len(leaks)} host, log, reason and secret strings")

    for phone in (False, True):
        visitor = Visitor(browser, server, phone=phone)
        try:
            visitor.goto("/status/sample")
            assert visitor.page.locator("section.env").count() == len(serving)
            no_overflow(visitor)
            visitor.shoot("status-phone" if phone else "status-desktop")
            assert visitor.outside_requests() == []
            assert visitor.errors == []
        finally:
            visitor.close()

    assert server.cli("app", "set", "sample", "--no-public-status").returncode == 0
    with anonymous(server) as http:
        assert http.get("/status/sample").status_code == 404
