"""Fleet test harness: agents (each with its router) on 127.0.0.N, and a load generator."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conveyor.agent import procfs
from testbed.helpers import ManagedProcess, ServerProcess, plain_http, wait_for


class AgentProcess(ManagedProcess):
    """`conveyor agent` as a real process, with its router on its own loopback address."""

    def __init__(
        self,
        server: ServerProcess,
        name: str,
        data: Path,
        *,
        address: str,
        router: str = "embedded",
        metrics: str | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.data = data
        self.address = address
        self.router = router
        self.metrics = metrics  # ADDR:PORT of its Prometheus exporter (--metrics), if any
        self.log_path = data.parent / f"{name}-agent.log"
        self.enrolment: str | None = None
        self.args: list[str] = []  # more options of `conveyor agent` (--ca, …)

    def start(self, timeout: float = 30) -> AgentProcess:
        self.launch()
        wait_for(self._online, timeout=timeout)
        return self

    def launch(self) -> AgentProcess:
        """Enrol if needed and spawn the agent, without waiting for it to come online."""
        if self.enrolment is None and not (self.data / "credential.json").exists():
            self.enrolment = self.server.post("/api/hosts", {"name": self.name})["enrolment_token"]
        args = [
            sys.executable,
            "-m",
            "conveyor",
            "agent",
            "--server",
            self.server.url,
            "--name",
            self.name,
            "--data",
            str(self.data),
            "--router",
            self.router,
            "--bind",
            self.address,
        ]
        if self.enrolment:
            args += ["--token", self.enrolment]
        if self.metrics:
            args += ["--metrics", self.metrics]
        args += self.args
        # CONVEYOR_ROUTER_WORKERS passes: the suite can run its agents' routers with workers
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONVEYOR_") or k == "CONVEYOR_ROUTER_WORKERS"
        }
        self.spawn(args, env)
        return self

    def _online(self, host: dict[str, Any] | None = None) -> bool:
        """Connected with its router up (`host`: this host as GET /api/hosts listed it)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log()}")
        if host is None:
            host = self.server.get(f"/api/hosts/{self.name}")
        return bool(host["online"] and host["observed"] and host["observed"]["router_alive"])

    def observed(self) -> dict[str, Any]:
        host = self.server.get(f"/api/hosts/{self.name}")
        return host["observed"] or {}

    def app(self, app: str) -> dict[str, Any] | None:
        return next((a for a in self.observed().get("apps", []) if a["app"] == app), None)

    def release(self, app: str, release: str) -> dict[str, Any] | None:
        found = self.app(app)
        if not found:
            return None
        return next((r for r in found["releases"] if r["release"] == release), None)

    def set(self, app: str, weights: dict[str, int], sticky: bool = False) -> Any:
        body = {
            "releases": [{"release": r, "weight": w} for r, w in weights.items()],
            "sticky": sticky,
        }
        r = self.server.http.put(f"/api/hosts/{self.name}/apps/{app}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_routed(self, app: str, weights: dict[str, int], timeout: float = 60) -> None:
        """Until the agent reports the app routed with exactly these weights."""

        def ok() -> bool:
            found = self.app(app)
            if not found or not found["routed"]:
                return False
            live = {r["release"]: r["weight"] for r in found["releases"] if r["weight"] > 0}
            return live == {k: v for k, v in weights.items() if v > 0}

        try:
            wait_for(ok, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"not routed as {weights}: {self.app(app)}\n{self.log()[-3000:]}"
            ) from None

    def stop_everything(self) -> None:
        """Tear down the agent, its router and its instances (they outlive the agent)."""
        self.stop()
        for pid in _pids_with_env(str(self.data)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# processes whose command line or working directory mentions a data dir (the product's)
_pids_with_env = procfs.pids_under


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    releases: Counter[str] = field(default_factory=Counter)
    failed_releases: Counter[str] = field(default_factory=Counter)  # 5xx answers by release

    @property
    def failures(self) -> int:
        return len(self.errors) + sum(n for s, n in self.statuses.items() if s >= 500)


class LoadGenerator:
    """N keep-alive clients hammering URLs until stopped; bounded by count and time.

    Each client is a thread with one http.client connection, not httpx: a request costs
    a few times less CPU that way, and on two cores the load generator's CPU is taken
    from the routers, agents and servers under test. Like httpx (httpcore), a client
    opens a new connection rather than reuse one that the server has closed while idle;
    any error on a request is counted as a failure (and the client pauses 10 ms).

    `host` sends that Host header instead of the URL's (an app served by its domains).
    `rate` paces each client to that many requests a second (None: as fast as it can).
    A test that only needs traffic flowing through every switch should pace it: on two
    cores an unpaced generator and the routers and apps it keeps busy take over a core
    from every other test running beside it.
    """

    def __init__(
        self,
        url: str | list[str],
        clients: int = 16,
        max_seconds: float = 300,
        max_requests: int = 2_000_000,
        rate: float | None = None,
        host: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.urls = [url] if isinstance(url, str) else list(url)
        self.interval = 0.0 if rate is None else 1.0 / rate
        # the Host header sent (apps told apart by name on a shared port); None: the URL's
        self.headers = {"Host": host} if host else {}
        # HTTPS (the URL's scheme is ignored): `host` is also the server name (SNI)
        self.tls = tls
        self.server_name = host
        self.clients = clients
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started: list[str] = []

    def __enter__(self) -> LoadGenerator:
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.result

    def snapshot(self) -> Counter[str]:
        """The releases that answered so far (a copy)."""
        with self._lock:
            return Counter(self.result.releases)

    def wait_requests(self, more: int, timeout: float = 20) -> None:
        """Wait until `more` requests have been answered (or failed) from now on."""
        target = self.result.sent + more
        wait_for(lambda: self.result.sent >= target, timeout=timeout, interval=0.01)

    def _client(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with self._lock:
            url = self.urls[len(self._started) % len(self.urls)]
            self._started.append(url)
        where = urlsplit(url)
        host, port = where.hostname or "127.0.0.1", where.port or 80
        path = where.path or "/"
        conn: http.client.HTTPConnection | None = None
        due = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.result.sent >= self.max_requests:
                break
            if self.interval:
                # the next request is due one interval after the last was due (not after it
                # ended): a slow answer is caught up on, not lost from the rate
                due = max(due + self.interval, time.monotonic() - self.interval)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
            try:
                if conn is not None and _closed_by_peer(conn):
                    conn.close()
                    conn = None
                if conn is None:
                    conn = self._connect(host, port)
                conn.request("GET", path, headers=self.headers)
                response = conn.getresponse()
                body = response.read()
                if response.will_close:
                    conn.close()
                    conn = None
                release = _release_of(body)
                with self._lock:
                    self.result.sent += 1
                    self.result.statuses[response.status] += 1
                    if response.status == 200:
                        self.result.ok += 1
                        self.result.releases[release] += 1
                    elif response.status >= 500:
                        self.result.failed_releases[release] += 1
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                with self._lock:
                    self.result.sent += 1
                    self.result.errors.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.01)  # a refused connection fails at once: no busy loop
        if conn is not None:
            conn.close()

    def _connect(self, host: str, port: int) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(host, port, timeout=30)
        # to `host`, with the Host header's name as the TLS server name
        conn = http.client.HTTPSConnection(
            self.server_name or host, port, timeout=30, context=self.tls
        )
        address = (host, port)
        conn._create_connection = (  # type: ignore[attr-defined]
            lambda _addr, timeout=30, source=None: socket.create_connection(address, timeout)
        )
        return conn


def _release_of(body: bytes) -> str:
    """The release that answered: {"release": ...} (the sample app), or a one-line body
    naming it (the router tests' backends)."""
    try:
        return str(json.loads(body).get("release", "?"))
    except (ValueError, AttributeError):
        text = body.decode(errors="replace").strip()
        return text if text and "\n" not in text and len(text) <= 64 else "?"


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server has closed (or sent junk on): readable."""
    sock = conn.sock
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class Fleet:
    """The sample app on a server and N hosts: an agent and its router per loopback address."""

    def __init__(
        self,
        server: ServerProcess,
        tmp: Path,
        hosts: dict[str, str],
        *,
        router: str = "embedded",
        app: str = "sample",
        metrics: bool = False,
    ) -> None:
        from conveyor.demo.sample import write_sample_app
        from testbed.helpers import free_port

        self.server = server
        self.app = app
        self.port = _port_free_on(list(hosts.values()))
        self.repo = tmp / app
        write_sample_app(self.repo, app, port=self.port)
        server.add_app(app, self.repo)
        self.agents = {
            name: AgentProcess(
                server,
                name,
                tmp / name,
                address=address,
                router=router,
                metrics=f"{address}:{free_port(address)}" if metrics else None,
            )
            for name, address in hosts.items()
        }

    def start(self) -> Fleet:
        for agent in self.agents.values():
            agent.start()
        return self

    def commit(self, label: str, environments: str, **config: Any) -> str:
        """A new commit of the sample app with these environments (and config knobs)."""
        from conveyor.demo.sample import sample_config
        from testbed.helpers import commit

        text = sample_config(self.app, port=self.port, extra=environments, **config)
        return commit(self.repo, {"conveyor.yml": text, "VERSION": label})

    def url(self, host: str) -> str:
        return f"http://{self.agents[host].address}:{self.port}/"

    def urls(self, *hosts: str) -> list[str]:
        return [self.url(h) for h in hosts or self.agents]

    def serving(self, host: str) -> str:
        return str(plain_http.get(self.url(host), timeout=5).json()["release"])

    def routed(self, host: str) -> dict[str, int]:
        found = self.agents[host].app(self.app) or {}
        return {r["release"]: r["weight"] for r in found.get("releases", []) if r["weight"] > 0}

    def stop_everything(self) -> None:
        for agent in self.agents.values():
            agent.stop_everything()


@contextlib.contextmanager
def running_fleet(
    server: ServerProcess,
    tmp: Path,
    hosts: dict[str, str],
    *,
    router: str = "embedded",
    metrics: bool = False,
) -> Iterator[Fleet]:
    """A started Fleet, its agents, routers and instances all stopped afterwards.

    With `metrics`, each agent serves its router's counters for Prometheus (--metrics).
    """
    fleet = Fleet(server, tmp, hosts, router=router, metrics=metrics)
    try:
        yield fleet.start()
    finally:
        fleet.stop_everything()


def _port_free_on(addresses: list[str]) -> int:
    import socket

    from testbed.helpers import free_port

    for _ in range(50):
        port = free_port(addresses[0])
        try:
            for address in addresses:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {addresses}")
