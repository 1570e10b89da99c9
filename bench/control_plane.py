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
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.client import Client
from conveyor.demo.hosts import (
    LocalHost,
    check_ports_free,
    conveyor_process,
    start_agents,
    stop_hosts,
)
from conveyor.demo.sample import write_sample_app
from conveyor.protocol import ObservedState

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
READS_LUA = """
paths = {"/api/status", "/api/runs"}
counter = 0
codes = {}
threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\\n", k, v)) end
  io.write(string.format("p50 %d p99 %d max %d\\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""
GOALS = {"p99": 0.5, "healthz_p99": 0.05, "status_rate": 1000.0}


@dataclass
class Wrk:
    """What a wrk run said: requests, seconds, status counts, socket errors, latencies (s)."""

    requests: int = 0
    seconds: float = 0.0
    codes: dict[int, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    p50: float = float("inf")  # no answer at all: as bad as can be
    p99: float = float("inf")
    max: float = float("inf")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        bad = sum(n for code, n in self.codes.items() if code >= 400)
        return bad + sum(self.socket_errors.values())


def run_wrk(url: str, token: str, clients: int, seconds: float, script: Path) -> Wrk:
    threads = max(1, min(2, clients))
    # a read unanswered for 10 s counts as a timeout (an error), as a client would give up
    timeout = f"{max(1, int(min(10.0, seconds / 2)))}s"
    argv = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", timeout]
    argv += ["-H", f"Authorization: Bearer {token}", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = Wrk()
    if m := re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", out):
        found.requests = int(m.group(1))
        found.seconds = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        kinds = ("connect", "read", "write", "timeout")
        found.socket_errors = {k: int(v) for k, v in zip(kinds, m.groups(), strict=True)}
    for code, n in re.findall(r"^status (\d+) (\d+)$", out, re.M):
        found.codes[int(code)] = int(n)
    if found.requests and (m := re.search(r"^p50 (\d+) p99 (\d+) max (\d+)$", out, re.M)):
        found.p50, found.p99, found.max = (int(x) / 1e6 for x in m.groups())
    return found


class Probe:
    """GET /healthz every `every` seconds on one keep-alive connection, from a process of its
    own (in this one, the simulated agents' thread would hold the GIL it needs to measure)."""

    def __init__(self, port: int, every: float = 0.05) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._stop, self._out = spawn.Event(), spawn.Queue()
        self._process = spawn.Process(
            target=_probe, args=(port, every, self._stop, self._out), daemon=True
        )
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def start(self) -> None:
        self._process.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.latencies, self.errors = self._out.get(timeout=60)
        self._process.join(timeout=10)


def _probe(port: int, every: float, stop: Any, out: Any) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.wait(every):
        started = time.perf_counter()
        try:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                errors.append(f"HTTP {answer.status}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append(time.perf_counter() - started)
    conn.close()
    out.put((latencies, errors))


class Agents(threading.Thread):
    """Simulated agents on an event loop of their own: long-polls and reports, counted."""

    def __init__(self, url: str, credentials: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.credentials = url, credentials
        self.polls = self.reports = self.reconnects = 0
        self.errors: list[str] = []
        self.stopping = False

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=4 * len(self.credentials))
        async with httpx.AsyncClient(base_url=self.url, timeout=90, limits=limits) as http:
            tasks = [
                asyncio.create_task(coroutine)
                for name, token in self.credentials.items()
                for coroutine in (self._poll(http, token), self._report(http, name, token))
            ]
            while not self.stopping:
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, http: httpx.AsyncClient, token: str) -> None:
        after, headers = -1, {"Authorization": f"Bearer {token}"}
        while True:
            try:
                r = await http.get(
                    "/api/agent/desired", params={"after": after, "wait": 30}, headers=headers
                )
                if r.status_code != 200:
                    self.errors.append(f"desired: HTTP {r.status_code}")
                    await asyncio.sleep(1)
                    continue
                after = int(r.json()["generation"])
                self.polls += 1
            except (httpx.ReadError, httpx.RemoteProtocolError):
                self.reconnects += 1  # a kept-alive connection closed as it was reused
            except httpx.HTTPError as exc:
                self.errors.append(f"desired: {type(exc).__name__}")
                await asyncio.sleep(1)

    async def _report(self, http: httpx.AsyncClient, name: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = ObservedState(host=name, generation=0, converged=True).model_dump_json()
        await asyncio.sleep(2 * secrets.randbelow(1000) / 1000)  # spread like real agents
        while True:
            try:
                r = await http.post("/api/agent/report", content=body, headers=headers)
                if r.status_code != 204:
                    self.errors.append(f"report: HTTP {r.status_code}")
                self.reports += 1
            except (httpx.ReadError, httpx.RemoteProtocolError):
                self.reconnects += 1  # a kept-alive connection closed as it was reused
                continue
            except httpx.HTTPError as exc:
                self.errors.append(f"report: {type(exc).__name__}")
            await asyncio.sleep(2)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busiest(exclude: set[int], seconds: float = 1.0, top: int = 5) -> list[str]:
    """The processes that used the most CPU over `seconds`, but ours."""

    def sample() -> dict[int, tuple[float, str]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in exclude:
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:90]
                found[int(entry.name)] = (cpu_seconds(int(entry.name)), cmd)
        return found

    before = sample()
    time.sleep(seconds)
    after = sample()
    used = [(after[p][0] - before[p][0], after[p][1]) for p in after if p in before]
    used.sort(reverse=True)
    return [f"{cpu / seconds:5.0%}  {cmd}" for cpu, cmd in used[:top] if cpu > 0]


def ours(root: Path) -> set[int]:
    """Pids whose environment or command line names our temp dir, and this process."""
    found = {os.getpid()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(root) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.add(int(entry.name))
    return found


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
