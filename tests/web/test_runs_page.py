"""The Run page in a real Chromium against a real server: live logs, colours, secrets, abort."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, commit, make_repo, running_server, wait_for
from tests.web.browser import Visitor, make_token
from tests.web.checks import no_overflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "hunter2-Pa55-for-the-page"
# the step stamps each line with the moment it writes it (ms since the epoch), in colour
SLOW_LINES = (
    "sleep 3; for i in 1 2 3 4 5; do "
    'printf "\\033[32mline-%s\\033[0m %s key=%s\\n" $i $(date +%s%3N) "$API_KEY"; sleep 1; done'
)
ROWS = 30_000  # about 300 KiB of log: more than a page shows at first
SERVICE = "service:\n  start: python3 app.py\n  port: 8000\n  secrets: [API_KEY]\n"

# Records, in the page, when each stamped line first appears in the document.
OBSERVER = """
window.__seen = {};
new MutationObserver(() => {
  const now = Date.now();
  if (!document.body) return;
  for (const m of document.body.innerText.matchAll(/line-(\\d) (\\d{13})/g)) {
    if (!(m[1] in window.__seen)) window.__seen[m[1]] = {written: Number(m[2]), seen: now};
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: its runs are independent, each app its own."""
    with running_server(tmp_path_factory.mktemp("runs-page") / "data") as proc:
        yield proc


def yml(app: str, test: list[str], build: list[str]) -> str:
    lines = [f"app: {app}", "test:", *[f"  - run: {c!r}" for c in test], "build:"]
    lines += [f"  - run: {c!r}" for c in build]
    return "\n".join(lines) + "\n" + SERVICE


def test_a_runs_log_lines_appear_within_a_second_coloured_and_masked(
    server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "shop"
    make_repo(repo, {"README": "shop\n"})
    sha = commit(
        repo,
        {"conveyor.yml": yml("shop", [SLOW_LINES], [f"seq -f 'row %g' 1 {ROWS}"])},
        message="Show the cart's <total> & taxes\n\nThe body of the message,\non two lines.",
    )
    server.add_app("shop", repo)
    assert server.http.put("/api/apps/shop/secrets/API_KEY", json={"value": SECRET}).is_success

    visitor = Visitor(browser, server).sign_in(make_token(server, "dee", "deployer"))
    phone = Visitor(browser, server, phone=True).sign_in(make_token(server, "vic", "viewer"))
    try:
        page = visitor.page
        page.add_init_script(OBSERVER)
        run = server.post("/api/apps/shop/runs", {})
        visitor.goto(f"/runs/{run['id']}")
        page.wait_for_function("() => Object.keys(window.__seen).length === 5", timeout=90_000)
        seen = page.evaluate("window.__seen")
        gaps = {int(i): v["seen"] - v["written"] for i, v in seen.items()}
        print("log line latency (ms, written → on the page):", dict(sorted(gaps.items())))
        assert all(0 <= gap < 1000 for gap in gaps.values()), gaps

        # the colour is a span with its class; the secret the step echoed is masked
        green = page.locator("pre.log span.ansi-fg-32", has_text="line-1")
        assert green.count() == 1
        assert page.inner_text("#steps").count("key=***") == 5
        assert SECRET not in page.content()

        # the run's end reaches the page by itself: head and steps, live
        page.wait_for_selector("#run .state-succeeded", timeout=90_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#steps summary .state-succeeded').length === 4"
        )
        assert page.locator("#steps summary .state").count() == 4  # replaced, not added to
        done = server.get(f"/api/runs/{run['id']}")
        assert done["commit_author"] == "Test <t@example.com>"
        assert done["commit_message"].startswith("Show the cart's <total> & taxes")
        head = page.locator("#run")
        assert "Show the cart's <total> & taxes" in head.inner_text()
        assert "on two lines." in head.inner_text()
        assert head.locator(f"[title='{sha}']").inner_text() == sha[:7]
        assert "Test" in head.inner_text() and "deployer" not in head.inner_text()
        # streamed live, the long log came whole: no page was skipped (the run may end
        # before its last lines reach the page: a beat sends at most LIVE_MAX of a log)
        page.wait_for_function(
            f"() => /^row {ROWS}$/m.test(document.querySelector('#steps').innerText)",
            timeout=30_000,
        )
        rows = re.findall(r"^row (\d+)$", page.inner_text("#steps"), re.M)
        assert rows == [str(i) for i in range(1, ROWS + 1)]
        no_overflow(visitor)
        visitor.shoot("run-desktop")

        # loaded afresh, a long log shows its last page, and earlier pages on request
        visitor.goto(f"/runs/{run['id']}")
        build = page.locator("details.step", has_text="seq -f")
        first = re.findall(r"^row (\d+)$", build.inner_text(), re.M)
        assert first[-1] == str(ROWS) and int(first[0]) > 1
        clicks = 0
        while build.locator(".earlier button").count():
            button = build.locator(".earlier button").element_handle()
            button.click()
            clicks += 1
            page.wait_for_function("b => !b.isConnected", arg=button)  # swapped for the page
            first = re.findall(r"^row (\d+)$", build.inner_text(), re.M)
        assert first == [str(i) for i in range(1, ROWS + 1)], "lines lost or twice"
        assert clicks >= 3
        print(f"long log: {ROWS} lines, the first page and {clicks} earlier pages")

        missing = phone.goto("/runs/99999")
        assert missing.status == 404 and "unknown run 99999" in phone.page.inner_text("main")
        phone.goto(f"/runs/{run['id']}")
        phone.page.wait_for_selector("#run .state-succeeded")
        no_overflow(phone)
        assert phone.page.locator("button", has_text="Abort").count() == 0
        phone.shoot("run-phone")
        for v in (visitor, phone):
            assert v.outside_requests() == []
            assert v.errors == []
    finally:
        visitor.close()
        phone.close()


def sse_events(response: httpx.Response, wanted: int) -> list[tuple[str, str, str]]:
    """(id, event, data) of the next `wanted` events that carry an id (log appends)."""
    found: list[tuple[str, str, str]] = []
    fields: dict[str, list[str]] = {}
    for line in response.iter_lines():
        if line == "":
            if "id" in fields:
                data = "\n".join(fields.get("data", []))
                found.append((fields["id"][0], fields["event"][0], data))
                if len(found) == wanted:
                    return found
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    return found


def test_a_reconnecting_page_resumes_where_it_was_and_a_deployer_aborts_the_run(
    server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "slow"
    ticks = "for i in $(seq 1 300); do echo tick-$i; sleep 0.1; done; sleep 120"
    make_repo(repo, {"conveyor.yml": yml("slow", [ticks], ["true"])})
    server.add_app("slow", repo)
    run = server.post("/api/apps/slow/runs", {})
    run_id = run["id"]

    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/login", data={"token": make_token(server, "sse", "viewer"), "next": "/"})
        assert r.status_code == 303
        wait_for(
            lambda: (
                "tick-3\n" in "".join(c["text"] for c in server.get(f"/api/runs/{run_id}/logs"))
            ),
            timeout=90,
        )
        page_html = http.get(f"/runs/{run_id}").text
        url = re.search(r'sse-connect="([^"]+)"', page_html)
        assert url is not None
        events_url = url.group(1).replace("&amp;", "&")
        # the page as rendered holds some ticks; the stream sends only the ones after
        rendered = re.findall(r"tick-(\d+)", page_html)
        with http.stream("GET", events_url) as response:
            first = sse_events(response, 3)
        time.sleep(1.5)  # ticks written meanwhile must come on the reconnection
        with http.stream("GET", events_url, headers={"Last-Event-ID": first[-1][0]}) as response:
            second = sse_events(response, 3)
        got = [n for _, _, data in first + second for n in re.findall(r"tick-(\d+)", data)]
        ticks_seen = [int(n) for n in rendered + got]
        assert ticks_seen == list(range(1, len(ticks_seen) + 1)), ticks_seen
        assert len(got) > 10  # the reconnection caught up on what was written while away
        print(f"reconnection: {len(rendered)} ticks in the page, {len(got)} streamed, none twice")

    viewer = Visitor(browser, server).sign_in(make_token(server, "val", "viewer"))
    deployer = Visitor(browser, server, phone=True).sign_in(make_token(server, "dan", "deployer"))
    try:
        viewer.goto(f"/runs/{run_id}")
        viewer.page.wait_for_selector("#run .state-running")
        assert viewer.page.locator("button", has_text="Abort").count() == 0
        # the form refuses a viewer anyway, saying which role it needs
        csrf = viewer.page.locator("input[name=csrf]").first.get_attribute("value")
        refused = viewer.page.request.post(
            f"{server.url}/runs/{run_id}/abort", form={"csrf": csrf or ""}
        )
        assert refused.status == 403 and "deployer" in refused.text()

        page = deployer.page
        deployer.goto(f"/runs/{run_id}")
        page.click("button:has-text('Abort run')")
        dialog = page.locator("dialog.confirm")
        assert dialog.is_visible()
        text = dialog.inner_text()
        assert f"Abort run #{run_id} of slow" in text
        assert "Its running step (test 'for i in $(seq 1 300)" in text
        assert "no release is built" in text
        no_overflow(deployer)
        deployer.shoot("run-abort-phone")
        with page.expect_navigation():
            page.click("dialog.confirm button[type=submit].danger")
        assert page.url == f"{server.url}/runs/{run_id}"
        ended = server.wait_run(run_id, timeout=60)
        assert ended["state"] == "cancelled"
        # the viewer's page learns it live, and its stream then closes
        viewer.page.wait_for_selector("#run .state-cancelled", timeout=30_000)
        viewer.page.wait_for_selector("#steps summary .state-cancelled")
        # its log followed the step to its last line, which says why it stopped
        log = viewer.page.locator("details.step", has_text="tick-").locator("pre.log")
        assert "conveyor: step cancelled; stopping its processes" in log.inner_text()
        assert log.evaluate("el => el.scrollTop + el.clientHeight >= el.scrollHeight - 8")
        viewer.shoot("run-cancelled-desktop")
        for v in (viewer, deployer):
            assert v.outside_requests() == []
            assert v.errors == []
    finally:
        viewer.close()
        deployer.close()
