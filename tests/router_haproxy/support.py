"""Helpers of the HAProxy driver tests: an event loop for the driver, keep-alive load."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.haproxy_runtime import ProcInfo, show_proc
from conveyor.agent.routing.spec import RouteSpec, Target

T = TypeVar("T")


class LoopThread:
    """The driver lives in one event loop that keeps running between test steps, so its
    log receiver and drain watcher work while the test thread sends requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def spec(app: str, port: int, *targets: tuple[str, int, int], **options: Any) -> RouteSpec:
    """spec("shop", 8000, ("rel-a", port_a, 90), ...) on 127.0.0.1."""
    return RouteSpec(
        app=app,
        port=port,
        bind="127.0.0.1",
        targets=[Target(release=r, port=p, weight=w) for r, p, w in targets],
        **options,
    )


def proc(loop: LoopThread, router: HAProxyRouter) -> ProcInfo:
    return loop.run(show_proc(router.paths))


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(), response.headers
    finally:
        conn.close()


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    releases: Counter[str] = field(default_factory=Counter)


class Load:
    """`clients` threads, each sending GETs back to back on one keep-alive connection."""

    def __init__(self, port: int, clients: int = 16, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.result

    def requests(self) -> int:
        with self._lock:
            return self.result.ok + len(self.result.failures)

    def wait_requests(self, more: int, timeout: float = 20) -> None:
        target = self.requests() + more
        deadline = time.monotonic() + timeout
        while self.requests() < target:
            assert time.monotonic() < deadline, f"load stalled at {self.requests()} requests"
            time.sleep(0.01)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.result.releases)

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read().decode()
                failure = None if response.status == 200 else f"HTTP {response.status}: {body!r}"
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                conn.close()
            with self._lock:
                if failure is None:
                    self.result.ok += 1
                    self.result.releases[body] += 1
                else:
                    self.result.failures.append(failure)
        conn.close()
