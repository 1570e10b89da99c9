"""The control plane under load: readers, long-polling agents and a deployment at once.

One real server; one real host (an agent and its embedded router on 127.0.1.10)
serving the sample app, whose deployment to `production` runs through the whole
measurement (a rolling step, then a watch window judged every second); nine more
apps with a release each, waiting for approval, so `GET /api/status` describes
ten apps. Then, for `--seconds`:

- `--clients` readers (wrk, C: a Python client would be the bottleneck, not the
  server) alternate `GET /api/status` and `GET /api/runs` as fast as answered;
- `--agents` simulated agents (asyncio, httpx) enrolled like real ones long-poll
  `GET /api/agent/desired` and post a report every 2 s, as `conveyor agent` does;
- `/healthz` is probed every 50 ms on a connection of its own.

Then `GET /api/status` alone (wrk, 50 connections, `--status-seconds`): the reads a
second the server sustains with ten apps. Printed: errors of each kind, p50/p99 of
the reads and of /healthz, reads a second, the server's CPU (with no reader first, for
`--idle` seconds, then per read beyond that: what a core of its own would serve), the
load average and the busiest other processes of the machine (the figures are only as
quiet as it is), then the goals of issue 20 with PASS or MISS.

    uv run python bench/control_plane.py [--clients 200] [--agents 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.control_load import (
    READS_LUA,
    Agents,
    Probe,
    Wrk,
    busiest,
    cpu_seconds,
    machine_busy,
    ours,
    run_wrk,
)

from conveyor.client import Client
from conveyor.demo.hosts import (
    LocalHost,
    check_ports_free,
    conveyor_process,
    start_agents,
    stop_hosts,
)
from conveyor.demo.sample import write_sample_app

HOST = LocalHost("web-1", "production", "127.0.1.10", Path())
DEPLOYED = """
environments:
  production:
    hosts: [web-1]
    strategy: rolling
    monitor: 5m
    analysis: {error_rate: 5%}
"""
WAITING = """
environments:
  production:
    hosts: [web-1]
    approval: required
"""
GOALS = {"p99": 0.5, "healthz_p99": 0.05, "status_rate": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(every)
    raise SystemExit(f"gave up waiting for {what} after {timeout:g} s")


def setup(client: Client, root: Path, apps: int) -> int:
    """Ten apps with a release each; the first deploying. Returns its deployment's id."""
    runs = []
    for i in range(apps):
        name = f"app-{i}"
        repo = root / name
        write_sample_app(repo, name, extra=DEPLOYED if i == 0 else WAITING)
        client.post("/api/apps", {"name": name, "repo": str(repo)})
        runs.append(client.post(f"/api/apps/{name}/runs", {})["id"])

    def built() -> bool:
        states = [client.get(f"/api/runs/{r}")["state"] for r in runs]
        if "failed" in states or "cancelled" in states:
            raise SystemExit(f"a run of the setup failed: {states}")
        return all(s == "succeeded" for s in states)

    wait(built, 600, f"{apps} runs to build their releases", every=1)

    def watching() -> Any:
        found = client.get("/api/deployments?app=app-0&environment=production&limit=1")
        d = found[0] if found else None
        if d and d["state"] in ("failed", "cancelled", "succeeded"):
            raise SystemExit(f"the deployment of app-0 ended before the load: {d}")
        steps = (client.get(f"/api/deployments/{d['id']}")["steps"]) if d else []
        return d and any(s["kind"] == "monitor" and s["state"] == "running" for s in steps) and d

    return int(wait(watching, 300, "app-0's deployment to reach its watch window")["id"])


def enrol(client: Client, url: str, count: int) -> dict[str, str]:
    """Register `count` hosts and enrol each as its agent would; their credentials."""
    credentials = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(count):
            name = f"sim-{i}"
            token = client.post("/api/hosts", {"name": name})["enrolment_token"]
            r = http.post("/api/agent/enrol", json={"name": name, "token": token})
            r.raise_for_status()
            credentials[name] = r.json()["agent_token"]
    return credentials


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="readers at once (200)")
    parser.add_argument("--agents", type=int, default=50, help="simulated agents (50)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds of load (30)")
    parser.add_argument("--status-seconds", type=float, default=10, help="status alone (10)")
    parser.add_argument("--apps", type=int, default=10, help="apps on the server (10)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--idle", type=float, default=10, help="seconds with no reader (10)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy's flame graph of the server under the mixed load"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the readers (apt-get install wrk)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-control-"))
    token = "cvy_bench_" + secrets.token_urlsafe(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    host = LocalHost(HOST.name, HOST.environment, HOST.address, root)
    server: subprocess.Popen[bytes] | None = None
    agents: Agents | None = None
    probe: Probe | None = None
    try:
        check_ports_free([host])
        env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": token}
        server = conveyor_process(
            ["server", "--data", str(root / "data"), "--listen", f"127.0.0.1:{port}"],
            root / "server.log",
            env,
        )
        client = Client(url, token)
        wait(lambda: _healthy(url), 120, "the server to answer", every=0.2)
        start_agents(client, url, [host])
        deployment = setup(client, root, args.apps)
        print(f"{args.apps} apps, app-0's deployment {deployment} in its watch window", flush=True)
        agents = Agents(url, enrol(client, url, args.agents))
        agents.start()
        wait(lambda: agents.polls >= args.agents, 120, "every simulated agent's first poll")
        script = root / "reads.lua"
        script.write_text(READS_LUA)
        status_only = root / "status.lua"
        status_only.write_text(READS_LUA.replace('"/api/status", "/api/runs"', '"/api/status"'))

        # what the server spends with no reader (agents, the deployment, its judge): read
        # costs below are what is left once this is taken out
        idle_from, idle_cpu = time.monotonic(), cpu_seconds(server.pid)
        time.sleep(args.idle)
        background = (cpu_seconds(server.pid) - idle_cpu) / (time.monotonic() - idle_from)
        probe = Probe(port)
        probe.start()
        cpu0, busy0 = cpu_seconds(server.pid), machine_busy()
        polls0, reports0 = agents.polls, agents.reports
        spy = None
        if args.profile is not None:
            spy_argv = ["record", "-o", str(args.profile), "-d", f"{args.seconds:g}", "-s"]
            spy = subprocess.Popen(
                [shutil.which("py-spy") or "py-spy", *spy_argv, "-p", str(server.pid)],
                stdout=subprocess.DEVNULL,
            )
        mixed = run_wrk(url, token, args.clients, args.seconds, script)
        if spy is not None:
            spy.wait()
        cpu1, busy1 = cpu_seconds(server.pid), machine_busy()
        polls, reports = agents.polls - polls0, agents.reports - reports0
        status = run_wrk(url, token, 50, args.status_seconds, status_only)
        cpu2 = cpu_seconds(server.pid)
        probe.stop()
        others = busiest(ours(root))
        try:  # a wedged server (as before issue 20) answers nothing: say so
            d = httpx.get(
                f"{url}/api/deployments/{deployment}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).json()
        except httpx.HTTPError as exc:
            d = {"state": f"unknown: the server did not answer ({type(exc).__name__})"}
        report(
            args,
            mixed,
            status,
            probe,
            agents,
            (polls, reports),
            (cpu1 - cpu0, cpu2 - cpu1, background),
            (busy0, busy1),
            (load_before, os.getloadavg()),
            others,
            d["state"],
        )
    finally:
        if probe is not None:
            with contextlib.suppress(Exception):
                probe.stop()
        if agents is not None:
            agents.stopping = True
            agents.join(timeout=10)
        stop_hosts([host])
        if server is not None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=20)
            server.kill()
        if args.keep:
            print(f"kept {root} (server.log, web-1-agent.log)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    return False


def _per_read(cpu: float, run: Wrk, background: float) -> str:
    """CPU a read costs, the background taken out, and what one core would serve."""
    if not run.requests:
        return "no reads"
    each = max(cpu - background * run.seconds, 0.0) / run.requests
    per_core = f"{1 / each:,.0f}" if each > 0 else "n/a"
    return f"{each * 1000:.2f} ms a read beyond the background, {per_core} reads/s a core"


def report(
    args: argparse.Namespace,
    mixed: Wrk,
    status: Wrk,
    probe: Probe,
    agents: Agents,
    agent_counts: tuple[int, int],
    cpu: tuple[float, float, float],
    busy: tuple[tuple[float, float], tuple[float, float]],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    others: list[str],
    deployment_state: str,
) -> None:
    (b0, t0), (b1, t1) = busy
    cores = os.cpu_count() or 1
    machine = (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")
    healthz_p99 = percentile(probe.latencies, 99)
    print(
        f"\n== {args.clients} readers (status and runs) for {args.seconds:g} s, "
        f"{args.agents} agents long-polling, a deployment running =="
    )
    print(f"reads          {mixed.requests} in {mixed.seconds:.1f} s: {mixed.rate:.0f}/s")
    print(f"  statuses     {json.dumps(mixed.codes, sort_keys=True)}")
    print(f"  socket errs  {json.dumps(mixed.socket_errors)}")
    print(
        f"  latency      p50 {mixed.p50 * 1000:.1f} ms, p99 {mixed.p99 * 1000:.1f} ms, "
        f"max {mixed.max * 1000:.0f} ms"
    )
    print(
        f"/healthz       {len(probe.latencies)} probes, {len(probe.errors)} errors: "
        f"p50 {percentile(probe.latencies, 50) * 1000:.1f} ms, p99 {healthz_p99 * 1000:.1f} ms, "
        f"max {max(probe.latencies, default=float('inf')) * 1000:.0f} ms"
    )
    polls, reports = agent_counts
    print(
        f"agents         {reports} reports, {polls} long-polls answered (each waits 30 s "
        f"unless woken), {agents.reconnects} kept-alive connections closed under a request "
        f"(retried), {len(agents.errors)} errors {sorted(set(agents.errors))[:3]}"
    )
    print(f"deployment     {deployment_state} (it was running in its watch window throughout)")
    mixed_cpu, status_cpu, background = cpu
    print(f"server CPU     {background:.0%} of a core with no reader (agents, deployment, judge)")
    print(
        f"               {mixed_cpu / mixed.seconds:.0%} of a core under the load: "
        f"{_per_read(mixed_cpu, mixed, background)}"
    )
    print(f"\n== GET /api/status alone, 50 connections, {args.apps} apps ==")
    print(
        f"reads          {status.requests} in {status.seconds:.1f} s: {status.rate:.0f}/s, "
        f"statuses {json.dumps(status.codes, sort_keys=True)}, "
        f"socket errors {sum(status.socket_errors.values())}"
    )
    print(f"  latency      p50 {status.p50 * 1000:.1f} ms, p99 {status.p99 * 1000:.1f} ms")
    print(
        f"server CPU     {status_cpu / status.seconds:.0%} of a core: "
        f"{_per_read(status_cpu, status, background)}"
    )
    print("\n== the machine ==")
    print(
        f"cores {cores}; busy {machine:.0%} during the load; load average "
        f"{' '.join(f'{x:.1f}' for x in load[0])} before, "
        f"{' '.join(f'{x:.1f}' for x in load[1])} after"
    )
    print("busiest other processes afterwards (CPU share of a core):")
    for line in others or ["  (none)"]:
        print(f"  {line}")
    errors = mixed.errors + status.errors + len(probe.errors) + len(agents.errors)
    print("\n== goals (issue 20) ==")
    for ok, text in (
        (errors == 0, f"0 errors: {errors}"),
        (mixed.p99 < GOALS["p99"], f"read p99 < 500 ms: {mixed.p99 * 1000:.0f} ms"),
        (healthz_p99 < GOALS["healthz_p99"], f"/healthz p99 < 50 ms: {healthz_p99 * 1000:.1f} ms"),
        (
            status.rate >= GOALS["status_rate"],
            f"status >= 1,000/s with {args.apps} apps: {status.rate:.0f}/s",
        ),
    ):
        print(f"{'PASS' if ok else 'MISS'}  {text}")


if __name__ == "__main__":
    main()
