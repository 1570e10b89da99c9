"""The admin socket, the metrics, and the router process's life (adoption, kill -9)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.spec import LATENCY_BUCKETS, RouterError, RouteSpec, Target
from tests.helpers import free_port
from tests.router.backend import Backend
from tests.router.support import Apps, admin, client, release_metrics, run

Instances = Callable[..., list[Backend]]


def test_socket_is_private_and_healthy(router: EmbeddedRouter) -> None:
    assert stat.S_IMODE(router.socket_path.stat().st_mode) == 0o600
    with admin(router) as http:
        health = http.get("/healthz").json()
    assert health["status"] == "ok" and health["pid"] > 0
    assert run(router.alive())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"port": 70000}', "port: Input should be less than or equal to 65535"),
        (b'{"port": 8000, "targets": [{"release": "r", "port": 1, "weight": 101}]}', "weight"),
        (b'{"port": 8000, "unknown": 1}', "unknown: Extra inputs are not permitted"),
        (b'{"app": "other", "port": 8000}', "the body is for app 'other'"),
        (
            b'{"port": 8000, "targets": [{"release": "r", "port": 9, "weight": 1},'
            b' {"release": "s", "port": 9, "weight": 1}]}',
            "listed twice",
        ),
        (b'{"port": 8000, "bind": "203.0.113.77"}', "cannot listen on 203.0.113.77"),
    ],
)
def test_bad_specs_are_refused_and_change_nothing(
    router: EmbeddedRouter, apps: Apps, instances: Instances, body: bytes, message: str
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with admin(router) as http:
        before = http.get("/apps").json()
        answer = http.put(
            f"/apps/{spec.app}",
            content=body.replace(b"8000", str(free_port()).encode()),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["error"]
        assert http.get("/apps").json() == before
    with client(spec) as h:
        assert h.get("/").text == "a\n"


def test_port_in_use_is_409_and_changes_nothing(
    router: EmbeddedRouter, apps: Apps, instances: Instances
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        moved = spec.model_copy(update={"port": busy})
        with pytest.raises(RouterError, match=r"cannot listen on 127\.0\.0\.1:\d+: .*in use"):
            run(router.apply(moved))
        fresh = RouteSpec(app="squatted", port=busy, bind="127.0.0.1")
        with admin(router) as http:
            answer = http.put("/apps/squatted", json=fresh.model_dump(mode="json"))
        assert answer.status_code == 409
        assert "Address already in use" in answer.json()["error"]
    # another app of this router on the same port
    clash = RouteSpec(app="clash", port=spec.port, bind="127.0.0.1")
    with pytest.raises(RouterError, match=f"already used by app {spec.app}"):
        run(router.apply(clash))
    specs = run(router.specs())
    assert specs[spec.app] == spec
    assert "squatted" not in specs and "clash" not in specs
    with client(spec) as h:
        assert h.get("/").text == "a\n"


def test_admin_routes(router: EmbeddedRouter, apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with admin(router) as http:
        assert http.get(f"/apps/{spec.app}").json() == spec.model_dump(mode="json")
        assert http.get("/apps").json()["apps"][spec.app]["port"] == spec.port
        assert http.get("/nowhere").status_code == 404
        assert http.post(f"/apps/{spec.app}").status_code == 405
        missing = http.delete("/apps/never-added")
        assert missing.status_code == 404 and "never-added" in missing.json()["error"]
        # a body without "app" takes it from the path
        port = free_port()
        put = http.put("/apps/from-path", json={"port": port, "bind": "127.0.0.1"})
        assert put.status_code == 200 and put.json()["app"] == "from-path"
        assert http.delete("/apps/from-path").json() == {"removed": "from-path"}
    run(router.remove("never-added"))  # removing what is not there is not an error


def test_metrics_count_requests_errors_and_latency(
    router: EmbeddedRouter, apps: Apps, instances: Instances
) -> None:
    a, b = instances("a", "b")
    spec = apps.serve({"a": (a.port, 50), "b": (b.port, 50)})
    with client(spec) as http:
        for _ in range(10):
            http.get("/")
        for _ in range(4):
            http.get("/status/500")
        for _ in range(2):
            http.get("/slow?s=0.3")
    counters = release_metrics(router, spec.app)
    total = counters["a"].requests + counters["b"].requests
    assert total == 16 and counters["a"].requests == 8
    assert counters["a"].errors_5xx + counters["b"].errors_5xx == 4
    for c in counters.values():
        assert c.in_flight == 0
        assert len(c.latency_buckets) == len(LATENCY_BUCKETS)
        assert c.latency_buckets == sorted(c.latency_buckets)  # cumulative
        assert c.latency_buckets[-1] == c.requests  # nothing slower than 10 s
        # one /slow?s=0.3 each, above 250 ms (how fast the others were is the machine's
        # load: no bound on them)
        slow = c.requests - c.latency_buckets[LATENCY_BUCKETS.index(0.25)]
        assert slow >= 1
        assert c.latency_sum >= 0.3
    metrics = run(router.metrics())
    assert metrics.backend == "embedded" and metrics.started_at <= time.time()
    with admin(router) as http:
        text = http.get("/metrics/prometheus").text
    labels = f'app="{spec.app}",release="a"'
    assert f"conveyor_router_requests_total{{{labels}}} 8" in text
    assert f'conveyor_router_request_duration_seconds_bucket{{{labels},le="+Inf"}} 8' in text
    assert "# TYPE conveyor_router_request_duration_seconds histogram" in text


def test_killed_router_is_restarted_and_reapplied(tmp_path: Path, instances: Instances) -> None:
    (a,) = instances("a")
    first = EmbeddedRouter(tmp_path / "r.sock", tmp_path / "r.log")
    run(first.start())
    try:
        spec = RouteSpec(
            app="shop",
            port=free_port(),
            bind="127.0.0.1",
            targets=[Target(release="a", port=a.port, weight=100)],
        )
        run(first.apply(spec))
        with client(spec) as http:
            assert http.get("/").text == "a\n"
        with admin(first) as http:
            pid = http.get("/healthz").json()["pid"]
        # an agent that restarts adopts the running router instead of starting another
        adopter = EmbeddedRouter(tmp_path / "r.sock", tmp_path / "r.log")
        run(adopter.start())
        with admin(adopter) as http:
            assert http.get("/healthz").json()["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while run(first.alive()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(httpx.ConnectError), client(spec) as http:
            http.get("/")
        with pytest.raises(RouterError, match="does not answer"):
            run(first.metrics())
        run(first.start())
        assert run(first.specs()) == {}
        run(first.apply(spec))
        with client(spec) as http:
            assert http.get("/").text == "a\n"
        with admin(first) as http:
            assert http.get("/healthz").json()["pid"] != pid
    finally:
        run(first.stop())
    assert not run(first.alive())
    assert not (tmp_path / "r.sock").exists()
    assert '"msg": "router started"' in (tmp_path / "r.log").read_text()


def test_a_second_router_on_the_same_socket_refuses_to_start(router: EmbeddedRouter) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.router", "--socket", str(router.socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "another router already serves this socket" in done.stderr
    assert run(router.alive())


def test_moving_an_app_to_another_port(
    router: EmbeddedRouter, apps: Apps, instances: Instances
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    moved = spec.model_copy(update={"port": free_port()})
    apps.apply(moved)
    with client(moved) as http:
        assert http.get("/").text == "a\n"
    with pytest.raises(httpx.ConnectError), client(spec) as http:
        http.get("/")
