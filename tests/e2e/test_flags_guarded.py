"""Guarded rollouts: the routers count each guarded flag's answers, the canary judge
compares on against off at each step, and a regression turns the flag off everywhere.

Two flags go through the same steps side by side under paced load: `bad-path`, whose
"on" path answers 5% 5xx (the app reads X-Conveyor-Flags), is turned off before 100%
with the judge's evidence in its history; `good-path`, whose "on" path is identical,
reaches 100%. No connection error meanwhile. The same stop on an HAProxy host, whose
answers are counted from its request log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_flags_router import _deployed
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, commit, wait_for
from tests.notify.receivers import Receiver

pytestmark = pytest.mark.timeout(400)

HOSTS = {"web-1": "127.0.61.21"}

FLAGAPP_PY = '''\
"""5% of the requests the bad-path flag is on for fail; everything else succeeds."""
import os
import random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        flags = self.headers.get("X-Conveyor-Flags") or ""
        bad = "bad-path=on" in flags.split("; ") and random.random() < 0.05
        body = b"broken" if bad else b"ok"
        self.send_response(500 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

CONFIG = """\
app: sample
test: []
build: []
service:
  start: python3 flagapp.py
  port: {port}
  health: {{path: /healthz, interval: 1s}}
  drain: 1s
environments:
  production:
    hosts: [web-1]
    analysis: {{compare: baseline, min_requests: 40}}
flags:
  stickiness: cookie:uid
  declare:
    - name: bad-path
    - name: good-path
notify:
  - url: "{receiver}"
"""

FLAGS = "/api/apps/sample/environments/production/flags"
STEPS = [5, 25, 50, 100]


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def _ended(server: ServerProcess, flag: str) -> Any:
    detail = server.get(f"{FLAGS}/{flag}")
    rollout = detail["rollout"]
    return detail if rollout and rollout["state"] != "running" else None


@pytest.mark.slow  # a deployment and two guarded rollouts under load: some 60 s
def test_a_regressing_flag_is_turned_off_and_an_identical_one_reaches_100(fleet: Fleet) -> None:
    server = fleet.server
    with Receiver() as receiver:
        config = CONFIG.format(port=fleet.port, receiver=receiver.url("/flags"))
        commit(fleet.repo, {"flagapp.py": FLAGAPP_PY, "conveyor.yml": config})
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        assert _deployed(server, run["id"])["state"] == "succeeded"

        # users without a uid cookie: each request hashed anew, on for the step's share
        with LoadGenerator(fleet.urls(), clients=4, max_seconds=300, rate=25) as load:
            for flag in ("bad-path", "good-path"):
                body = {"steps": STEPS, "step_pause": 2}
                started = server.post(f"{FLAGS}/{flag}/rollout", body)
                assert started["state"]["enabled"] and started["state"]["rollout"] == 5
                assert started["rollout"]["state"] == "running"
            # the server restarted mid-way: the rollouts go on from their records
            wait_for(lambda: server.get(f"{FLAGS}/good-path")["rollout"]["step"] >= 1, timeout=120)
            server.stop()
            server.start()
            bad = wait_for(lambda: _ended(server, "bad-path"), timeout=240, interval=0.5)
            good = wait_for(lambda: _ended(server, "good-path"), timeout=240, interval=0.5)
            result = load.stop()
        wait_for(lambda: receiver.received, timeout=60)

    assert result.errors == [], result.errors[:5]  # no connection error
    assert bad["rollout"]["state"] == "stopped", bad["rollout"]
    assert bad["rollout"]["steps"][bad["rollout"]["step"]] < 100
    assert not bad["state"]["enabled"]
    assert bad["rollout"]["judgement"]["verdict"] == "fail"
    last = bad["history"][-1]
    assert last["by"] == "conveyor (guarded rollout)" and not last["after"]["enabled"]
    assert "turned off by the judge" in last["note"] and "errors" in last["note"], last["note"]

    assert good["rollout"]["state"] == "completed", good["rollout"]
    assert good["state"]["enabled"] and good["state"]["rollout"] == 100
    raised = [c["after"]["rollout"] for c in good["history"] if c["by"].startswith("conveyor")]
    assert raised == STEPS[1:], good["history"]

    # the dashboard's Flags page shows both rollouts, their step and the judge's word
    with httpx.Client(base_url=server.url, timeout=30) as http:
        signed = http.post("/login", data={"token": server.token, "next": "/"})
        assert signed.status_code == 303, signed.text
        html = http.get("/apps/sample/environments/production/flags").text
    assert 'data-rollout="stopped"' in html and 'data-rollout="completed"' in html
    assert 'data-verdict="fail"' in html

    # notified like a rolled-back deployment, once
    [sent] = receiver.received
    assert "flag bad-path failed at" in sent["title"], sent
    for label in ("What:", "Where:", "Release:", "Why:", "Done:", "Link:"):
        assert label in sent["message"], sent


@pytest.mark.slow  # a deployment and a guarded rollout under load through HAProxy: some 40 s
def test_a_regressing_flag_is_turned_off_on_an_haproxy_host(
    server: ServerProcess, tmp_path: Path
) -> None:
    """HAProxy counts the answers from its request log: the same judge, the same stop."""
    with (
        running_fleet(server, tmp_path, {"web-1": "127.0.73.21"}, router="haproxy") as fleet,
        Receiver() as receiver,
    ):
        config = CONFIG.format(port=fleet.port, receiver=receiver.url("/flags"))
        commit(fleet.repo, {"flagapp.py": FLAGAPP_PY, "conveyor.yml": config})
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        assert _deployed(server, run["id"])["state"] == "succeeded"
        with LoadGenerator(fleet.urls(), clients=4, max_seconds=300, rate=25) as load:
            server.post(f"{FLAGS}/bad-path/rollout", {"steps": STEPS, "step_pause": 2})
            bad = wait_for(lambda: _ended(server, "bad-path"), timeout=240, interval=0.5)
            result = load.stop()
        metrics = fleet.agents["web-1"].observed()["metrics"]
    assert metrics["backend"] == "haproxy"
    counted = metrics["apps"]["sample"]["flags"]
    assert counted["bad-path=on"]["errors_5xx"] > 0, counted
    assert counted["bad-path=off"]["requests"] > 0, counted
    assert result.errors == [], result.errors[:5]
    assert bad["rollout"]["state"] == "stopped", bad["rollout"]
    assert bad["rollout"]["steps"][bad["rollout"]["step"]] < 100
    assert bad["rollout"]["judgement"]["verdict"] == "fail"
    assert not bad["state"]["enabled"]
