"""The kill switch: from `PATCH … {"enabled": false}` (what `conveyor flag off` sends) to
every host's router serving the flag off, over a real server and N agents with their
embedded routers (loopback addresses 127.0.61.x).

    uv run python bench/flags_kill.py [--hosts 20] [--rounds 10]

Each round turns the flag on (and waits until every router serves it on), then off,
timing each host from the request's start to the first answer of its router with
`flag=off`, polled every 20 ms per host over a keep-alive connection. Prints p50, p99
and max over hosts x rounds.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.fleet import Fleet
from testbed.helpers import ServerProcess, commit, wait_for

SUBNET = "127.0.61."
POLL_EVERY = 0.02  # seconds between two polls of one router
FLAG = "kill-me"
APP_PY = """\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the bench's polls open no connection each

    def do_GET(self):
        body = json.dumps({"flags": self.headers.get("X-Conveyor-Flags", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
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
    hosts: [{hosts}]
    batch: 100%
flags:
  stickiness: cookie:uid
  declare:
    - name: {flag}
"""


def serving(http: httpx.Client, url: str, state: str) -> bool:
    try:
        answer = http.get(url, headers={"Cookie": "uid=u-1"}, timeout=2)
        return f"{FLAG}={state}" in answer.json()["flags"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False


class Poller:
    """One keep-alive connection to a host's router (http.client: a poll costs a fraction
    of an httpx request's CPU, which the server and agents under test need)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def serving(self, state: str) -> bool:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            self.conn.request("GET", "/", headers={"Cookie": "uid=u-1"})
            body = self.conn.getresponse().read()
            return f"{FLAG}={state}".encode() in body
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return False


def switch(server: ServerProcess, urls: list[str], state: str) -> list[float]:
    """Seconds from the change's request to each router serving `state` (each router
    polled every POLL_EVERY: 20 threads polling every 5 ms with httpx took most of the 2
    cores the server and agents under test needed)."""
    seen: dict[str, float] = {}
    go = threading.Event()

    def watch(url: str) -> None:
        poller = Poller(url)
        go.wait()
        while not poller.serving(state):
            time.sleep(POLL_EVERY)
        seen[url] = time.monotonic()
        if poller.conn is not None:
            poller.conn.close()

    threads = [threading.Thread(target=watch, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    started = time.monotonic()
    go.set()
    path = f"/api/apps/sample/environments/production/flags/{FLAG}"
    answer = server.http.patch(path, json={"enabled": state == "on"})
    answer.raise_for_status()
    for t in threads:
        t.join(timeout=60)
    return [seen[u] - started for u in urls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    hosts = {f"web-{i}": f"{SUBNET}{10 + i}" for i in range(1, args.hosts + 1)}
    with tempfile.TemporaryDirectory(prefix="conveyor-flags-kill-") as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "data").start()
        fleet = Fleet(server, root, hosts)
        try:
            fleet.start()
            config = CONFIG.format(port=fleet.port, hosts=", ".join(hosts), flag=FLAG)
            commit(fleet.repo, {"flagapp.py": APP_PY, "conveyor.yml": config})
            run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=120)
            assert run["state"] == "succeeded", run
            urls = fleet.urls()
            with httpx.Client() as http:
                wait_for(lambda: all(serving(http, u, "off") for u in urls), timeout=300)
            offs: list[float] = []
            for _ in range(args.rounds):
                switch(server, urls, "on")
                offs += switch(server, urls, "off")
        finally:
            fleet.stop_everything()
            server.stop()
    offs.sort()
    p99 = offs[min(len(offs) - 1, int(len(offs) * 0.99))]
    print(
        f"flag off to every router serving it off, {args.hosts} hosts x {args.rounds} rounds: "
        f"p50 {statistics.median(offs) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {offs[-1] * 1000:.0f} ms (goal: p99 < 1 s); "
        f"load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
