"""A thousand hosts: one deployment step's desired state reaching every agent.

PostgreSQL 15 (a throwaway cluster, testbed/postgres.py) and one or two real
`conveyor server` processes sharing it; N simulated agents (one asyncio process,
httpx: one long-poll each, and a report every `--report-every` seconds, so that the
hosts are online) enrolled like real ones, spread over the servers. Then:

1. at rest for `--rest` seconds: the servers' RSS and CPU (cores);
2. a run of the sample app builds a release whose `production` lists all N hosts,
   rolling with `batch: 100%`: the deployment's first step writes the desired state of
   every host in one transaction, with one wake-up (a NOTIFY for the other server);
3. from that step's start (its `started_at`, written just before the commit) to each
   agent's long-poll returning the new state: p50, p99, max, and how many got it.

The simulated agents never converge, so the deployment fails later: only the delivery
is measured. Their own CPU (parsing N answers at once) is in the figures: they share
the machine's cores with the servers.

    uv run python bench/fleet_wakeup.py [--agents 100,1000] [--servers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import CpuMeter, memory

from conveyor.demo.sample import write_sample_app
from conveyor.protocol import ObservedState
from testbed.helpers import free_port, wait_for
from testbed.postgres import Cluster

TOKEN = "bench-admin-token-" + "x" * 20
ADDRESS = "127.0.65.{}"  # the servers: .1, .2 (--address)


def environments(hosts: list[str]) -> str:
    return (
        "\nenvironments:\n  production:\n"
        f"    hosts: [{', '.join(hosts)}]\n"
        "    strategy: rolling\n    batch: 100%\n"
    )


class Connection:
    """One kept-alive HTTP/1.1 connection of a simulated agent, as cheap as a request can
    be: httpx costs this process about a millisecond a request (its pool, anyio, sniffio;
    py-spy), which for a thousand answers at once was a second of the delivery measured."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.address, self.port = parts.hostname or "", parts.port or 80
        self.head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """The status and body; once more on a new connection if the kept-alive one was
        closed by the server meanwhile (both requests here may be sent twice)."""
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode() + body
        for attempt in (1, 2):
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.address, self.port)
            reader, writer = self.streams
            try:
                writer.write(message)
                status = int((await reader.readuntil(b"\r\n")).split()[1])
                length, close = 0, False
                for line in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == b"connection" and value.strip().lower() == b"close":
                        close = True
                found = await reader.readexactly(length) if length else b""
                if close:
                    self.close()
                return status, found
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class Fleet:
    """N simulated agents on this process's event loop."""

    def __init__(self, urls: list[str], credentials: dict[str, str], report_every: float) -> None:
        self.urls, self.credentials = urls, credentials
        self.report_every = report_every
        self.got: dict[str, float] = {}  # host -> when (time.time()) it got an app
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: list[Connection] = []
        self.polling = 0

    async def start(self) -> None:
        # two connections per agent (its long-poll, its reports), as real agents have: one
        # httpx pool of 2,000 connections looked at each of them for every request and
        # took most of this process's time (py-spy: 92 samples in 151 at rest)
        for i, (name, token) in enumerate(sorted(self.credentials.items())):
            url = self.urls[i % len(self.urls)]
            poll, report = Connection(url, token), Connection(url, token)
            self._connections += [poll, report]
            self._tasks.append(asyncio.create_task(self._poll(poll, name)))
            self._tasks.append(asyncio.create_task(self._report(report, name)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in self._connections:
            connection.close()

    async def _poll(self, http: Connection, name: str) -> None:
        after, counted = -1, False
        while True:
            try:
                status, found = await http.request(
                    "GET", f"/api/agent/desired?after={after}&wait=25"
                )
                if status != 200:
                    self.errors.append(f"desired: HTTP {status}")
                    await asyncio.sleep(1)
                    continue
                body = json.loads(found)
                if body["apps"] and name not in self.got:
                    self.got[name] = time.time()
                after = int(body["generation"])
                if not counted:
                    counted, self.polling = True, self.polling + 1
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
                self.errors.append(f"desired: {type(exc).__name__}")
                await asyncio.sleep(1)

    async def _report(self, http: Connection, name: str) -> None:
        body = ObservedState(host=name, generation=0, converged=True).model_dump_json().encode()
        await asyncio.sleep(self.report_every * (hash(name) % 1000) / 1000)
        while True:
            try:
                status, found = await http.request("POST", "/api/agent/report", body)
                if status != 204:
                    self.errors.append(f"report: HTTP {status} {found[:200]!r}")
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
                self.errors.append(f"report: {type(exc).__name__}")
            await asyncio.sleep(self.report_every)


def start_server(tmp: Path, db: str, index: int) -> tuple[subprocess.Popen[bytes], str]:
    address = os.environ.get("BENCH_ADDRESS", ADDRESS).format(index + 1)
    port = free_port(address)
    env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": TOKEN, "CONVEYOR_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "conveyor", "server", "--data", str(tmp / "data")]
    argv += ["--listen", f"{address}:{port}", "--db", db]
    with open(tmp / f"server-{index + 1}.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{address}:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp / f"server-{index + 1}.log").read_text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=120)
    return proc, url


async def enrol(url: str, names: list[str]) -> dict[str, str]:
    admin = {"Authorization": f"Bearer {TOKEN}"}
    found: dict[str, str] = {}
    limit = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(name: str) -> None:
            async with limit:
                r = await http.post("/api/hosts", json={"name": name}, headers=admin)
                r.raise_for_status()
                r = await http.post(
                    "/api/agent/enrol",
                    json={"name": name, "token": r.json()["enrolment_token"]},
                )
                r.raise_for_status()
                found[name] = r.json()["agent_token"]

        await asyncio.gather(*(one(n) for n in names))
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    n: int, servers: int, rest: float, report_every: float, pg: Cluster, profile: str | None
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-wakeup-"))
    db = pg.url(pg.create_database())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for i in range(servers):
            proc, url = start_server(tmp, db, i)
            procs.append(proc)
            urls.append(url)
        names = [f"h{i:05d}" for i in range(n)]
        fleet = Fleet(urls, await enrol(urls[0], names), report_every)
        await fleet.start()
        while fleet.polling < n:
            await asyncio.sleep(0.2)
        admin = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=urls[0], timeout=60, headers=admin) as api:
            for _ in range(120):  # every host reported: online
                await asyncio.sleep(1)
                try:
                    if all(h["online"] for h in (await api.get("/api/hosts")).json()):
                        break
                except httpx.HTTPError:
                    continue  # a kept-alive connection the server closed meanwhile
        meter = CpuMeter(tmp)
        await asyncio.sleep(rest)
        cpu = meter.stop().get("server", 0.0)
        rss = memory(tmp).get("server", (0, 0, 0))[1] / 1024
        repo = tmp / "sample"
        write_sample_app(repo, "sample", port=free_port("127.0.0.1"), extra=environments(names))
        admin = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=urls[-1], timeout=60, headers=admin) as api:
            (
                await api.post("/api/apps", json={"name": "sample", "repo": str(repo)})
            ).raise_for_status()
            (await api.post("/api/apps/sample/runs", json={})).raise_for_status()
            if profile:  # the first server, from the run's start, past the step's delivery
                spy = ["py-spy", "record", "-p", str(procs[0].pid), "-d", "12", "-r", "100"]
                spy += ["--nonblocking", "-f", "raw", "-o", profile]
                subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            step_start = None
            deadline = time.monotonic() + 120
            while step_start is None and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                try:
                    found = (await api.get("/api/deployments?app=sample")).json()
                    details = [
                        (await api.get(f"/api/deployments/{listed['id']}")).json()
                        for listed in found
                    ]
                except httpx.HTTPError:
                    continue  # a kept-alive connection the server closed meanwhile
                for d in details:
                    started = [s["started_at"] for s in d["steps"] if s.get("started_at")]
                    if started:
                        step_start = min(started)
                    elif d["state"] in ("failed", "cancelled"):
                        raise SystemExit(f"the deployment ended at once: {d['reason']}")
        assert step_start is not None, "no deployment step started within 120 s: " + ", ".join(
            f"deployment {d['id']} {d['state']} ({d.get('reason')}), {len(d['steps'])} steps"
            for d in found
        )
        at = datetime.fromisoformat(step_start.replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        deadline = time.monotonic() + 30
        while len(fleet.got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        delays = [t - at.timestamp() for t in fleet.got.values()]
        await fleet.stop()
        print(
            f"N={n:>5} servers={servers}: at rest RSS {rss:.0f} MB (all servers), "
            f"CPU {cpu * 100:.0f}% of a core; step write -> agents: {len(delays)}/{n} got it, "
            f"p50 {statistics.median(delays) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms; "
            f"errors {len(fleet.errors)}",
            flush=True,
        )
        if n >= 1000:
            goal = rss / servers < 300 and percentile(delays, 0.99) < 1.0
            print(f"  goal (<300 MB a server, p99 < 1 s): {'PASS' if goal else 'MISS'}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", default="100,1000", help="N, comma-separated")
    parser.add_argument("--servers", default="1,2", help="servers sharing the database")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds measured at rest")
    parser.add_argument("--report-every", type=float, default=5.0, help="agents' reports")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy's samples of the first server during the run and the step (raw format)",
    )
    args = parser.parse_args()
    pg = Cluster().start()
    try:
        print(f"load before: {os.getloadavg()[0]:.1f}", flush=True)
        for servers in (int(s) for s in args.servers.split(",")):
            for n in (int(a) for a in args.agents.split(",")):
                asyncio.run(measure(n, servers, args.rest, args.report_every, pg, args.profile))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
