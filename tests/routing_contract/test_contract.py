"""The driver contract: the same tests against both drivers (embedded router, HAProxy).

Each driver gets one router for the module; each test uses its own app and public port.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.spec import PREVIEW_HEADER, Router, RouteSpec, Target
from tests.helpers import free_port, wait_for
from tests.router.backend import Backend
from tests.router_haproxy.support import LoopThread


def _make(kind: str, base: Path) -> Router:
    if kind == "haproxy":
        if shutil.which("haproxy") is None:
            pytest.skip("haproxy is not installed")
        return HAProxyRouter(base / "haproxy")
    return EmbeddedRouter(base / "router.sock", base / "router.log")


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="module", params=["embedded", "haproxy"])
def router(
    request: pytest.FixtureRequest, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    driver = _make(request.param, tmp_path_factory.mktemp(request.param))
    loop.run(driver.start())
    try:
        yield driver
    finally:
        loop.run(driver.stop())


@pytest.fixture(scope="module")
def releases() -> Iterator[dict[str, Backend]]:
    made = {r: Backend(r).start() for r in ("a", "b")}
    try:
        yield made
    finally:
        for backend in made.values():
            backend.stop()


def serve(loop: LoopThread, router: Router, app: str, **weights: tuple[Backend, int]) -> RouteSpec:
    spec = RouteSpec(
        app=app,
        port=free_port(),
        bind="127.0.0.1",
        targets=[Target(release=r, port=b.port, weight=w) for r, (b, w) in weights.items()],
        drain_timeout=5,
    )
    loop.run(router.apply(spec))
    wait_for(lambda: _answers(spec), timeout=10, interval=0.05)
    return spec


def _answers(spec: RouteSpec) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{spec.port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def bodies(spec: RouteSpec, count: int, headers: dict[str, str] | None = None) -> list[str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{spec.port}", timeout=10) as http:
        return [http.get("/", headers=headers).text.strip() for _ in range(count)]


def test_weights_send_traffic_where_they_say(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    a, b = releases["a"], releases["b"]
    spec = serve(loop, router, "weights", a=(a, 100), b=(b, 0))
    assert set(bodies(spec, 20)) == {"a"}
    spec = spec.model_copy(
        update={
            "targets": [
                Target(release="a", port=a.port, weight=50),
                Target(release="b", port=b.port, weight=50),
            ]
        }
    )
    loop.run(router.apply(spec))
    wait_for(lambda: set(bodies(spec, 20)) == {"a", "b"}, timeout=10)
    spec = spec.model_copy(update={"targets": [Target(release="b", port=b.port, weight=100)]})
    loop.run(router.apply(spec))
    wait_for(lambda: set(bodies(spec, 20)) == {"b"}, timeout=10)
    loop.run(router.remove(spec.app))


def test_the_preview_header_reaches_a_release_out_of_rotation(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    spec = serve(loop, router, "preview", a=(releases["a"], 100), b=(releases["b"], 0))
    assert set(bodies(spec, 10, {PREVIEW_HEADER: "b"})) == {"b"}
    assert set(bodies(spec, 10)) == {"a"}
    loop.run(router.remove(spec.app))


def test_metrics_count_requests_per_release(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    spec = serve(loop, router, "counted", a=(releases["a"], 100))

    def counted() -> int:
        found = loop.run(router.metrics()).apps.get(spec.app)
        return 0 if found is None or "a" not in found.releases else found.releases["a"].requests

    before = counted()
    bodies(spec, 25)
    wait_for(lambda: counted() >= before + 25, timeout=15, interval=0.2)
    loop.run(router.remove(spec.app))


def test_draining_lets_an_in_flight_request_finish(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    a, b = releases["a"], releases["b"]
    spec = serve(loop, router, "drained", a=(a, 100))
    results: list[httpx.Response] = []

    def slow() -> None:
        results.append(httpx.get(f"http://127.0.0.1:{spec.port}/slow?s=1", timeout=10))

    thread = threading.Thread(target=slow)
    thread.start()

    def in_flight() -> int:
        found = loop.run(router.metrics()).apps.get(spec.app)
        return 0 if found is None or "a" not in found.releases else found.releases["a"].in_flight

    wait_for(lambda: in_flight() == 1, timeout=5, interval=0.05)
    loop.run(
        router.apply(
            spec.model_copy(update={"targets": [Target(release="b", port=b.port, weight=100)]})
        )
    )
    wait_for(lambda: set(bodies(spec, 10)) == {"b"}, timeout=10)
    thread.join(timeout=10)
    assert results and results[0].status_code == 200
    loop.run(router.remove(spec.app))
