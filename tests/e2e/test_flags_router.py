"""Flags without an SDK: each host's router evaluates the app's flags for each request and
passes the answers in X-Conveyor-Flags; a change reaches the router without a deployment,
and while the server is down a change is refused and the router keeps the last flags."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.header import header_value
from conveyor.protocol.unleash import ClientFeatures
from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = pytest.mark.timeout(300)

HOSTS = {"web-1": "127.0.61.11"}

FLAGAPP_PY = '''\
"""Answers every request with the X-Conveyor-Flags headers it got, as JSON."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"flags": self.headers.get_all("X-Conveyor-Flags") or []}).encode()
        self.send_response(200)
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
flags:
  stickiness: cookie:uid
  declare:
    - name: new-checkout
    - name: search
      variants: [{{name: a, weight: 50}}, {{name: b, weight: 50}}]
"""

FLAGS = "/api/apps/sample/environments/production/flags"


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def _seen(fleet: Fleet, uid: str, extra: dict[str, str] | None = None) -> list[str]:
    headers = {"Cookie": f"theme=dark; uid={uid}", **(extra or {})}
    answer = httpx.get(fleet.url("web-1"), headers=headers, timeout=5)
    answer.raise_for_status()
    flags: list[str] = answer.json()["flags"]
    return flags


def _deployed(server: ServerProcess, run: int) -> Any:
    def ended() -> Any:
        found = [d for d in server.get("/api/deployments?app=sample") if d["run"] == run]
        if found and found[0]["state"] not in ("queued", "waiting", "running", "rolling_back"):
            return found[0]
        return None

    return wait_for(ended, timeout=120, interval=0.3)


@pytest.mark.slow  # a deployment, 600 requests, a server restart: some 40 s
def test_the_router_passes_each_users_flags_and_a_change_reaches_it(fleet: Fleet) -> None:
    server = fleet.server
    commit(fleet.repo, {"flagapp.py": FLAGAPP_PY, "conveyor.yml": CONFIG.format(port=fleet.port)})
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    assert _deployed(server, run["id"])["state"] == "succeeded"

    # declared flags start off; a client's own X-Conveyor-Flags never reaches the app
    assert _seen(fleet, "u-1", {"X-Conveyor-Flags": "new-checkout=on"}) == [
        "new-checkout=off; search=off"
    ]

    server.http.patch(FLAGS + "/new-checkout", json={"enabled": True})
    server.http.patch(FLAGS + "/search", json={"enabled": True, "rollout": 50})

    token = server.post("/api/apps/sample/environments/production/flag-tokens", {"name": "t"})
    document = server.http.get("/api/client/features", headers={"Authorization": token["token"]})
    ours = FlagSet(ClientFeatures.model_validate_json(document.content))
    # both changes reached the router (each its own desired state)
    expected = header_value(ours, Context(user_id="user-1"))
    wait_for(lambda: _seen(fleet, "user-1") == [expected], timeout=30)
    for i in range(200):
        uid = f"user-{i}"
        assert _seen(fleet, uid) == [header_value(ours, Context(user_id=uid))], uid
    answers = {_seen(fleet, f"user-{i}")[0].split("; ")[1] for i in range(200)}
    assert answers == {"search=a", "search=b", "search=off"}  # off: outside the 50%

    # the kill switch: no deployment, the host's long-poll brings it
    started = time.monotonic()
    server.http.patch(FLAGS + "/new-checkout", json={"enabled": False})
    wait_for(lambda: _seen(fleet, "u-1")[0].startswith("new-checkout=off"), timeout=30)
    print(f"flag off to the router serving it off: {time.monotonic() - started:.2f} s")

    # the server down: a change is refused, the router keeps serving the last flags
    server.stop()
    refused = server.cli("flag", "on", "sample", "production", "new-checkout", timeout=60)
    assert refused.returncode == 1 and "cannot reach the conveyor server" in refused.stderr
    assert _seen(fleet, "u-1")[0].startswith("new-checkout=off")
    # back: a change made now reaches the host (generous bound: the agent polls again)
    server.start()
    assert server.http.patch(FLAGS + "/new-checkout", json={"enabled": True}).status_code == 200
    wait_for(lambda: _seen(fleet, "u-1")[0].startswith("new-checkout=on"), timeout=60)
