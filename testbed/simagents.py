"""Simulated agents: many hosts' control-plane traffic from one asyncio loop in a thread.

Each simulated agent is enrolled like a real host (`POST /api/hosts` for the one-time
token, `POST /api/agent/enrol`), then long-polls `GET /api/agent/desired` and reports a
minimal ObservedState every REPORT_EVERY seconds. It runs no instance and no router: its
host must not be in an environment that is deployed (it would never converge).

Given several servers (sharing one database), it behaves as the real agent does when
its server is lost (conveyor/agent/link.py, agent/main.py): a refused connection, a
broken one or a 503 moves it to the next URL at once; once every server was tried since
the last answer, it waits RETRY_FIRST (jittered), doubling up to RETRY_MAX.

Per agent it records the longest gap between two successful exchanges with any server
(a long-poll answered or a report accepted; the gap still open when it stops counts),
and every answer that is neither 2xx nor 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import httpx

import conveyor
from conveyor.agent.link import LONG_POLL_MAX, REPORT_TIMEOUT
from conveyor.agent.main import REPORT_EVERY, RETRY_FIRST, RETRY_MAX
from conveyor.protocol import ObservedState
from conveyor.protocol.versions import AGENT_VERSION_HEADER
from testbed.helpers import ServerProcess

__all__ = ["REPORT_EVERY", "RETRY_FIRST", "RETRY_MAX", "SimulatedAgent", "SimulatedFleet", "enrol"]


def enrol(server: ServerProcess, names: list[str]) -> dict[str, str]:
    """Enrol each host as a real agent would: its agent token by name."""
    tokens: dict[str, str] = {}
    for name in names:
        once = server.post("/api/hosts", {"name": name})["enrolment_token"]
        r = server.http.post("/api/agent/enrol", json={"name": name, "token": once})
        assert r.status_code == 200, r.text
        tokens[name] = str(r.json()["agent_token"])
    return tokens


@dataclass
class SimulatedAgent:
    """One host's link to the servers: the URL in use, and what it saw."""

    name: str
    token: str
    servers: list[str]
    server: int = 0  # index of the URL in use
    failed: int = 0  # servers tried in a row without an answer
    last_ok: float = field(default_factory=time.monotonic)
    longest_gap: float = 0.0
    exchanges: int = 0
    moves: int = 0
    backoff: float = RETRY_FIRST  # the wait after a round of servers without an answer
    bad: list[str] = field(default_factory=list)  # answers neither 2xx nor 503

    def answered(self) -> None:
        now = time.monotonic()
        self.longest_gap = max(self.longest_gap, now - self.last_ok)
        self.last_ok = now
        self.failed = 0
        self.backoff = RETRY_FIRST
        self.exchanges += 1

    def fail_over(self, failed: int) -> bool:
        """As ServerLink.fail_over: move to the next URL; False once every server was
        tried since the last answer (then wait before the next round)."""
        if failed != self.server:
            return True  # the other loop moved already: go on with the new one
        self.failed += 1
        self.server = (self.server + 1) % len(self.servers)
        self.moves += 1
        if self.failed >= len(self.servers):
            self.failed = 0
            return False
        return True


class SimulatedFleet:
    """`tokens` (host -> agent token) polling and reporting to `servers` (URLs) from a
    background thread, between start() and stop(); agent i starts on server i mod n."""

    def __init__(self, servers: list[str], tokens: dict[str, str]) -> None:
        self.agents = [
            SimulatedAgent(name, token, servers, server=i % len(servers))
            for i, (name, token) in enumerate(sorted(tokens.items()))
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopping: asyncio.Event | None = None
        self._main: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> SimulatedFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SimulatedFleet:
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        return self

    def stop(self) -> None:
        """Stop every agent (the gap still open counts) and the thread."""
        if self._main is None:
            return
        stopping = self._stopping
        if stopping is not None:
            self._loop.call_soon_threadsafe(stopping.set)
        try:
            self._main.result(timeout=60)
        finally:
            self._main = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            # requests cancelled mid-flight (long-polls, a dead server's) can leave httpcore's
            # sockets unclosed: finalized here, not in whatever test this worker runs next
            # (whose `filterwarnings = error` would fail on their ResourceWarning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                self._loop.close()
                gc.collect()
        now = time.monotonic()
        for agent in self.agents:
            agent.longest_gap = max(agent.longest_gap, now - agent.last_ok)

    def online(self) -> bool:
        """Every agent had an answer since it started."""
        return all(agent.exchanges > 0 for agent in self.agents)

    @property
    def longest_gap(self) -> float:
        return max(agent.longest_gap for agent in self.agents)

    @property
    def bad(self) -> list[str]:
        return [f"{agent.name}: {b}" for agent in self.agents for b in agent.bad]

    async def _run(self) -> None:
        self._stopping = asyncio.Event()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        headers = {AGENT_VERSION_HEADER: conveyor.__version__}
        timeout = httpx.Timeout(10, read=LONG_POLL_MAX + 10)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as http:
            now = time.monotonic()
            tasks = []
            for agent in self.agents:
                agent.last_ok = now
                tasks.append(asyncio.create_task(self._poll(http, agent)))
                tasks.append(asyncio.create_task(self._report(http, agent)))
            await self._stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _exchange(
        self, http: httpx.AsyncClient, agent: SimulatedAgent, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        """One request to the agent's server: the answer, or None if that server is lost
        (no connection, a broken one, a 503) after moving the agent to the next one."""
        used = agent.server
        try:
            r = await http.request(method, agent.servers[used] + path, **kw)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code != 503:
            if r.is_success:
                agent.answered()
            else:
                agent.bad.append(f"{r.request.method} {r.url}: {r.status_code} {r.text[:200]}")
            return r
        if not agent.fail_over(used):  # every server tried: wait, longer each round
            wait, agent.backoff = agent.backoff, min(agent.backoff * 2, RETRY_MAX)
            await asyncio.sleep(wait * (0.5 + random.random()))
        return None

    async def _poll(self, http: httpx.AsyncClient, agent: SimulatedAgent) -> None:
        after = -1
        auth = {"Authorization": f"Bearer {agent.token}"}
        while True:
            params = {"after": after, "wait": LONG_POLL_MAX}
            r = await self._exchange(
                http, agent, "GET", "/api/agent/desired", params=params, headers=auth
            )
            if r is not None and r.is_success:
                after = int(r.json()["generation"])
            elif r is not None:
                await asyncio.sleep(REPORT_EVERY)  # refused: no busy loop

    async def _report(self, http: httpx.AsyncClient, agent: SimulatedAgent) -> None:
        auth = {"Authorization": f"Bearer {agent.token}", "Content-Type": "application/json"}
        body = ObservedState(host=agent.name, generation=0, converged=True).model_dump_json()
        await asyncio.sleep(REPORT_EVERY * random.random())  # spread over the interval
        while True:
            r = await self._exchange(
                http,
                agent,
                "POST",
                "/api/agent/report",
                content=body,
                headers=auth,
                timeout=REPORT_TIMEOUT,
            )
            if r is not None:  # lost: again at once to the next server, or after the wait
                await asyncio.sleep(REPORT_EVERY)
