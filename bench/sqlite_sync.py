"""SQLite `synchronous=NORMAL` against `FULL`, side by side, on the server's usual writes.

Each mode gets a fresh real `conveyor server` (on the disk under --dir, never a tmpfs:
the difference is one fsync per commit) and the same work, through the HTTP API:

- agents' reports: N enrolled agents POST /api/agent/report as fast as they can
  (each report is one commit: the observed state, last_seen, the applied generation);
- agents' polls: GET /api/agent/desired without waiting (one commit: last_seen);
- a run whose step prints many log lines (logs go to files: a few commits a run);
- short runs back to back (a handful of commits each: queued, steps, release);
- bare commits in-process (one UPDATE each), the fsync cost alone.

    uv run python bench/sqlite_sync.py [--agents 8] [--reports 300] [--lines 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, text

from conveyor.store.db import make_engine, migrate

MODES = ("NORMAL", "FULL")
TOKEN = "bench-admin-token-" + "x" * 24

# the child: conveyor server with the one pragma this bench compares set after the others
CHILD = """
import sys
from pathlib import Path
from sqlalchemy import event
import conveyor.server.serve as serve
from conveyor.store import db

mode, data, port = sys.argv[1], sys.argv[2], sys.argv[3]
plain = db.make_engine

def make_engine(url):
    engine = plain(url)

    @event.listens_for(engine, "connect")
    def _sync(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA synchronous={mode}")

    return engine

serve.make_engine = make_engine
serve.serve(Path(data), f"127.0.0.1:{port}", None, None)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(mode: str, data: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": TOKEN, "CONVEYOR_LOG_LEVEL": "warning"}
    log = open(data.parent / f"{data.name}.log", "ab")  # noqa: SIM115 - the child keeps a copy
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(data), str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the {mode} server did not start; see {log.name}")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
        log.close()


def enrol(client: httpx.Client, name: str) -> str:
    created = client.post("/api/hosts", json={"name": name})
    created.raise_for_status()
    enrolled = client.post(
        "/api/agent/enrol", json={"name": name, "token": created.json()["enrolment_token"]}
    )
    enrolled.raise_for_status()
    return str(enrolled.json()["agent_token"])


def observed(host: str, n: int) -> dict[str, Any]:
    """A report of a realistic size: two apps, each with a serving and a warm release."""
    apps = []
    for app in ("shop", "api"):
        releases = [
            {"release": f"{n:04x}abc-1", "phase": "healthy", "weight": 100, "instances": 1},
            {"release": f"{n:04x}def-1", "phase": "warm", "weight": 0, "instances": 1},
        ]
        apps.append({"app": app, "current": releases[0]["release"], "releases": releases})
    return {"host": host, "generation": 1, "converged": True, "apps": apps, "router_alive": True}


def hammer(
    url: str,
    agents: dict[str, str],
    count: int,
    request: Callable[[httpx.Client, str, int], None],
) -> tuple[float, list[float]]:
    """Each agent (name: token) sends `count` requests, all at once: (per second, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def agent(host: str, token: str) -> None:
        mine = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            for i in range(count):
                started = time.perf_counter()
                request(c, host, i)
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=agent, args=item) for item in agents.items()]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def git_repo(path: Path, config: str) -> None:
    path.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
    }
    env["GIT_COMMITTER_EMAIL"] = "b@b"
    (path / "conveyor.yml").write_text(config)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)


def run_once(client: httpx.Client, app: str) -> float:
    started = time.perf_counter()
    run = client.post(f"/api/apps/{app}/runs", json={})
    run.raise_for_status()
    run_id = run.json()["id"]
    while True:
        state = client.get(f"/api/runs/{run_id}").json()["state"]
        if state not in ("queued", "running"):
            if state != "succeeded":
                raise SystemExit(f"run {run_id} of {app} ended {state}")
            return time.perf_counter() - started
        time.sleep(0.02)


def bare_commits(mode: str, path: Path, count: int) -> float:
    """Commits per second of a one-row UPDATE, on the server's own engine and schema."""
    engine = make_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _sync(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA synchronous={mode}")

    migrate(engine)
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, n INTEGER)"))
        conn.execute(text("INSERT INTO bench VALUES (1, 0)"))
        conn.commit()
        started = time.perf_counter()
        for i in range(count):
            conn.execute(text("UPDATE bench SET n = :n WHERE id = 1"), {"n": i})
            conn.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(mode: str, work: Path, args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    work.mkdir()
    data = work / f"data-{mode.lower()}"
    with server(mode, data) as client:
        url = str(client.base_url)
        agents = {f"host-{i}": enrol(client, f"host-{i}") for i in range(args.agents)}

        def report(c: httpx.Client, host: str, i: int) -> None:
            c.post("/api/agent/report", json=observed(host, i)).raise_for_status()

        rate, lat = hammer(url, agents, args.reports, report)
        out["agents' reports /s"] = rate
        out["report p50 ms"] = p(lat, 0.5) * 1e3
        out["report p99 ms"] = p(lat, 0.99) * 1e3

        def poll(c: httpx.Client, host: str, i: int) -> None:
            c.get("/api/agent/desired", params={"wait": 0}).raise_for_status()

        rate, lat = hammer(url, agents, args.reports, poll)
        out["agents' polls /s"] = rate
        out["poll p50 ms"] = p(lat, 0.5) * 1e3

        loud = f'app: loud\ntest:\n  - run: "seq 1 {args.lines}"\nbuild: []\n'
        git_repo(work / f"loud-{mode}", loud)
        client.post("/api/apps", json={"name": "loud", "repo": str(work / f"loud-{mode}")})
        run_once(client, "loud")  # the first run clones the mirror: not timed
        times = [run_once(client, "loud") for _ in range(3)]
        out[f"run of {args.lines:,} log lines s"] = statistics.median(times)

        quick = 'app: quick\ntest:\n  - run: "true"\n  - run: "true"\nbuild:\n  - run: "true"\n'
        git_repo(work / f"quick-{mode}", quick)
        client.post("/api/apps", json={"name": "quick", "repo": str(work / f"quick-{mode}")})
        run_once(client, "quick")
        started = time.perf_counter()
        for _ in range(args.runs):
            run_once(client, "quick")
        out["short runs /s"] = args.runs / (time.perf_counter() - started)
    out["bare commits /s"] = bare_commits(mode, work / f"bare-{mode}.db", args.commits)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8, help="concurrent agents reporting")
    parser.add_argument("--reports", type=int, default=300, help="reports per agent")
    parser.add_argument("--lines", type=int, default=200_000, help="log lines of the loud run")
    parser.add_argument("--runs", type=int, default=10, help="short runs back to back")
    parser.add_argument("--commits", type=int, default=2000, help="bare commits")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the databases go")
    parser.add_argument("--rounds", type=int, default=2, help="each mode this many times")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="sqlite-sync-", dir=args.dir) as tmp:
        for n in range(args.rounds):
            # alternate which goes first, so a machine getting busier favours neither
            for mode in MODES if n % 2 == 0 else MODES[::-1]:
                results[mode].append(measure(mode, Path(tmp) / f"{mode}-{n}", args))
                print(f"round {n + 1}: {mode} measured", file=sys.stderr, flush=True)
    rows = list(results[MODES[0]][0])
    width = max(len(r) for r in rows)
    print(f"median of {args.rounds} rounds; {args.agents} agents at once")
    print(f"{'':{width}}  {'NORMAL':>10}  {'FULL':>10}  {'FULL/NORMAL':>11}")
    for row in rows:
        normal, full = (statistics.median(r[row] for r in results[m]) for m in MODES)
        print(f"{row:{width}}  {normal:>10,.2f}  {full:>10,.2f}  {full / normal:>11.2f}")


if __name__ == "__main__":
    main()
