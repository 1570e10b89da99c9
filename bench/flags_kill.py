"""The kill switch: from `PATCH … {"enabled": false}` (what `conveyor flag off` sends) to
every host's router serving the flag off, over a real server and N agents with their
embedded routers (loopback addresses 127.0.61.x).

    uv run python bench/flags_kill.py [--hosts 20] [--rounds 10] [--subnet 127.0.61.]

Each round turns the flag on (and waits until every router serves it on), then off,
timing each host from the request's start to the first answer of its router with
`flag=off`, polled every 20 ms per host over a keep-alive connection. Prints p50, p99
and max over hosts x rounds, and where the time went (from the agents' logs: the
server's answer to the change, the agent's long-poll answered, its router given the
flags, the router seen serving them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
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


Switch = tuple[float, float, dict[str, float]]  # wall-clock start, PATCH answered, seen


def switch(server: ServerProcess, urls: list[str], state: str) -> Switch:
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
        seen[url] = time.time()
        if poller.conn is not None:
            poller.conn.close()

    threads = [threading.Thread(target=watch, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    started = time.time()
    go.set()
    path = f"/api/apps/sample/environments/production/flags/{FLAG}"
    answer = server.http.patch(path, json={"enabled": state == "on"})
    answered = time.time()
    answer.raise_for_status()
    for t in threads:
        t.join(timeout=60)
    return started, answered, seen


def log_times(path: Path, message: str) -> list[float]:
    """Unix times of an agent's log lines with this message."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == message:
            out.append(datetime.fromisoformat(entry["ts"]).timestamp())
    return out


def first_after(times: list[float], t: float) -> float | None:
    return next((x for x in times if x >= t - 0.002), None)


def stages(fleet: Fleet, urls: dict[str, str], offs: list[Switch]) -> dict[str, list[float]]:
    """Per host and round: seconds from the change's request to the server's answer, to
    the agent's long-poll answered, to its router given the routing, to it seen off."""
    out: dict[str, list[float]] = {"answered": [], "polled": [], "applied": [], "seen": []}
    for name, agent in fleet.agents.items():
        polled = log_times(agent.log_path, "desired state")
        applied = log_times(agent.log_path, "routing applied")
        for started, answered, seen in offs:
            p, a = first_after(polled, started), first_after(applied, started)
            if p is None or a is None:
                continue
            out["answered"].append(answered - started)
            out["polled"].append(p - started)
            out["applied"].append(a - started)
            out["seen"].append(seen[urls[name]] - started)
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--subnet", default=SUBNET, help="the hosts' loopback addresses' prefix")
    args = parser.parse_args()
    hosts = {f"web-{i}": f"{args.subnet}{10 + i}" for i in range(1, args.hosts + 1)}
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
            switches: list[Switch] = []
            for _ in range(args.rounds):
                switch(server, urls, "on")
                switches.append(switch(server, urls, "off"))
            by_host = dict(zip(hosts, urls, strict=True))
            times = stages(fleet, by_host, switches)
        finally:
            fleet.stop_everything()
            server.stop()
    offs = sorted(t - started for started, _, seen in switches for t in seen.values())
    print(
        f"flag off to every router serving it off, {args.hosts} hosts x {args.rounds} rounds: "
        f"p50 {statistics.median(offs) * 1000:.0f} ms, p99 {p99(offs) * 1000:.0f} ms, "
        f"max {offs[-1] * 1000:.0f} ms (goal: p99 < 1 s); "
        f"load average {'/'.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print("from the change's request to (p50 / p99, ms):")
    for stage, what in [
        ("answered", "the server's answer to the change"),
        ("polled", "the agent's long-poll answered (agent log 'desired state')"),
        ("applied", "its router given the routing (agent log 'routing applied')"),
        ("seen", "the router seen serving the flag off"),
    ]:
        values = times[stage]
        if values:
            print(f"  {what}: {statistics.median(values) * 1000:.0f} / {p99(values) * 1000:.0f}")


if __name__ == "__main__":
    main()
