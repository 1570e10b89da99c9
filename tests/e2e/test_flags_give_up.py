"""A guarded rollout whose step never sees enough requests with the flag on gives up
(`flags.give_up` after the step's pause): the flag is turned off, the reason is in its
history, in `conveyor flag show` and in a notification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, make_repo, running_server, wait_for
from tests.notify.receivers import Receiver

CONFIG = """\
app: quiet
test: []
build: []
service:
  start: python3 -m http.server $PORT
  port: 18080
environments:
  production:
    hosts: [web-1]
    analysis: {{compare: baseline, min_requests: 500}}
flags:
  stickiness: cookie:uid
  give_up: 2s
  declare:
    - name: lonely
notify:
  - url: "{receiver}"
"""

FLAG = "/api/apps/quiet/environments/production/flags/lonely"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def server(tmp_path: Path, receiver: Receiver) -> Iterator[ServerProcess]:
    """A server with app `quiet`, one release declaring the flag; no host serves it, so
    no request with the flag on is ever counted."""
    with running_server(tmp_path / "data") as server:
        make_repo(tmp_path / "repo", {"conveyor.yml": CONFIG.format(receiver=receiver.url("/"))})
        server.add_app("quiet", tmp_path / "repo")
        run = server.post("/api/apps/quiet/runs", {})
        assert server.wait_run(run["id"])["state"] == "succeeded"
        yield server


def _ended(server: ServerProcess) -> Any:
    detail = server.get(FLAG)
    return detail if detail["rollout"]["state"] != "running" else None


def test_a_step_without_enough_traffic_gives_up_and_turns_the_flag_off(
    server: ServerProcess, receiver: Receiver
) -> None:
    started = server.post(f"{FLAG}/rollout", {"steps": [5, 50, 100], "step_pause": 1})
    assert started["state"]["enabled"] and started["rollout"]["state"] == "running"

    # 1 s pause + 2 s give_up; generous for a loaded machine
    ended = wait_for(lambda: _ended(server), timeout=60, interval=0.3)
    rollout = ended["rollout"]
    assert rollout["state"] == "gave_up", rollout
    assert rollout["step"] == 0
    assert rollout["reason"].startswith("gave up at 5%"), rollout["reason"]
    assert "it needs 500 (analysis.min_requests)" in rollout["reason"]
    assert not ended["state"]["enabled"]
    last = ended["history"][-1]
    assert last["by"] == "conveyor (guarded rollout)" and not last["after"]["enabled"]
    assert "gave up at 5%" in last["note"], last["note"]

    shown = server.cli("flag", "show", "quiet", "production", "lonely")
    assert shown.returncode == 0, shown.stderr
    assert "guarded rollout gave up: step 1 of 3" in shown.stdout, shown.stdout
    assert "flags.give_up: 2s" in shown.stdout

    # the dashboard's Flags page says it too
    with httpx.Client(base_url=server.url, timeout=30) as http:
        signed = http.post("/login", data={"token": server.token, "next": "/"})
        assert signed.status_code == 303, signed.text
        html = http.get("/apps/quiet/environments/production/flags").text
    assert 'data-rollout="gave_up"' in html and "Guarded rollout gave up" in html
    assert "gave up at 5%" in html

    def about_the_flag() -> list[dict[str, Any]]:
        # the release's deployment, waiting for a host that never comes, says its own
        return [m for m in receiver.received if "flag lonely" in m["title"]]

    wait_for(about_the_flag, timeout=60)
    [sent] = about_the_flag()
    assert "flag lonely gave up for want of traffic at 5%" in sent["title"], sent
    for label in ("What:", "Where:", "Why:", "Done:", "Link:"):
        assert label in sent["message"], sent
