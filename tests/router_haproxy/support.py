"""Helpers of the HAProxy driver tests: an event loop for the driver, specs, requests.

The load generator is testbed.fleet.LoadGenerator, shared by every router test and bench.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
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
