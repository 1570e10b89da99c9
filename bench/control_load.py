"""The control-plane bench's load and measures: wrk readers, the /healthz probe, simulated
agents, and what the machine's processes use (from /proc)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing
import os
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.protocol import ObservedState

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
