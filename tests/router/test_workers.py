"""Several worker processes: one port shared, changes fanned out, metrics summed."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.router.workers import sum_metrics, worker_socket
from conveyor.routespec import AppMetrics, ReleaseCounters, RouterMetrics
from tests.helpers import wait_for
from tests.router.backend import Backend
from tests.router.support import Apps, admin, run

Instances = Callable[..., list[Backend]]


def _metrics(apps: dict[str, dict[str, int]], started: float = 1.0) -> RouterMetrics:
    return RouterMetrics(
        backend="embedded",
        started_at=started,
        apps={
            app: AppMetrics(
                app=app,
                releases={
                    r: ReleaseCounters(requests=n, in_flight=n % 2, latency_sum=n / 10)
                    for r, n in rels.items()
                },
            )
            for app, rels in apps.items()
        },
    )


@pytest.mark.parametrize(
    ("first", "others", "expected"),
    [
        ({"web": {"a": 3}}, [], {"web": {"a": 3}}),
        ({"web": {"a": 3}}, [{"web": {"a": 4}}], {"web": {"a": 7}}),
        ({"web": {"a": 3}}, [{"web": {"b": 1}}, {}], {"web": {"a": 3, "b": 1}}),
        ({}, [{"api": {"a": 2}}], {"api": {"a": 2}}),
    ],
)
def test_metrics_of_workers_add_up(
    first: dict[str, dict[str, int]],
    others: list[dict[str, dict[str, int]]],
    expected: dict[str, dict[str, int]],
) -> None:
    total = sum_metrics(_metrics(first, 5.0), [_metrics(o, 9.0) for o in others])
    assert total.started_at == 5.0
    got = {app: {r: c.requests for r, c in m.releases.items()} for app, m in total.apps.items()}
    assert got == expected
    for app, rels in expected.items():
        for release, n in rels.items():
            counters = total.apps[app].releases[release]
            parts = [m for m in (first, *others) if release in m.get(app, {})]
            assert counters.in_flight == sum(m[app][release] % 2 for m in parts)
            assert counters.latency_sum == pytest.approx(n / 10)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[EmbeddedRouter]:
    router = EmbeddedRouter(tmp_path / "w.sock", tmp_path / "w.log", workers=2)
    run(router.start())
    try:
        yield router
    finally:
        run(router.stop())


def test_two_workers_share_a_port_and_add_up_their_counters(
    two: EmbeddedRouter, instances: Instances
) -> None:
    (a,) = instances("a")
    apps = Apps(two)
    spec = apps.serve({"a": (a.port, 100)})
    with admin(two) as http:
        assert http.get("/healthz").json()["workers"] == 2
    # a new connection per request: the kernel spreads them over both processes
    for _ in range(40):
        assert httpx.get(f"http://127.0.0.1:{spec.port}/", trust_env=False).text == "a\n"
    metrics = run(two.metrics())
    assert metrics.apps[spec.app].releases["a"].requests == 40
    # and both served some (the worker's own socket tells its share)
    worker = EmbeddedRouter(worker_socket(two.socket_path, 1), two.log_path)
    share = run(worker.metrics()).apps[spec.app].releases["a"].requests
    assert 0 < share < 40
    # a removal reaches every worker: nothing answers on the port any more
    apps.cleanup()

    def refused() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{spec.port}/", trust_env=False, timeout=2)
        except httpx.ConnectError:
            return True
        return False

    wait_for(lambda: all(refused() for _ in range(10)), timeout=10)


def test_a_lost_worker_stops_the_router(two: EmbeddedRouter) -> None:
    """The agent restarts a router that stops, with all its routes: no half-served port."""
    pid = int(run(two._call("GET", "/healthz")).json()["pid"])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    wait_for(lambda: not run(two.alive()), timeout=10)
    # as the agent does: start it again (the dead worker's socket file is still there)
    run(two.start())
    with admin(two) as http:
        assert http.get("/healthz").json()["workers"] == 2
