"""The HAProxy driver against real HAProxy processes and real instances on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time

import pytest

from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.haproxy_state import AppState, new_slots
from conveyor.agent.routing.spec import LATENCY_BUCKETS, PREVIEW_HEADER, RouterError
from testbed.backend import Backend
from testbed.fleet import LoadGenerator
from testbed.helpers import free_port, wait_for
from tests.router_haproxy.conftest import MakeRouter
from tests.router_haproxy.support import LoopThread, get, proc, spec

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed (scripts/setup.sh installs it)",
)

Instances = dict[str, Backend]


def test_serves_through_the_frontend(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    loop.run(router.apply(spec("shop", port, ("rel-a", instances["a1"].port, 100))))
    status, body, headers = get(port)
    assert (status, body) == (200, "rel-a")
    assert loop.run(router.alive())
    assert "set-cookie" not in {k.lower() for k in headers}


def test_weighted_split(loop: LoopThread, router: HAProxyRouter, instances: Instances) -> None:
    port = free_port()
    a, b = instances["a1"].port, instances["b1"].port
    loop.run(router.apply(spec("shop", port, ("rel-a", a, 90), ("rel-b", b, 10))))
    with LoadGenerator(f"http://127.0.0.1:{port}/", clients=4) as load:
        load.wait_requests(1000)
    result = load.result
    assert result.failures == 0, result.errors[:5]
    share = result.releases["rel-b"] / sum(result.releases.values())
    assert 0.08 <= share <= 0.12, result.releases


def test_weight_change_and_swap_under_load_without_reload(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    a1, a2, b1, b2 = (instances[n].port for n in ("a1", "a2", "b1", "b2"))
    loop.run(router.apply(spec("shop", port, ("rel-a", a1, 50), ("rel-a", a2, 50))))
    before = proc(loop, router)
    with LoadGenerator(f"http://127.0.0.1:{port}/", clients=16) as load:
        load.wait_requests(300)
        # canary steps, then promotion, then rollback, then promotion again
        for weights in ((45, 45, 5, 5), (25, 25, 25, 25), (0, 0, 50, 50), (50, 50, 0, 0)):
            ports = (a1, a2, b1, b2)
            targets = zip(("rel-a", "rel-a", "rel-b", "rel-b"), ports, weights, strict=True)
            loop.run(router.apply(spec("shop", port, *targets)))
            load.wait_requests(300)
        loop.run(router.apply(spec("shop", port, ("rel-b", b1, 50), ("rel-b", b2, 50))))
        load.wait_requests(200)
        mark = load.snapshot()
        load.wait_requests(500)
        after_swap = load.snapshot() - mark
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    assert set(load.result.releases) == {"rel-a", "rel-b"}
    assert set(after_swap) == {"rel-b"}, after_swap
    after = proc(loop, router)
    assert (after.master_pid, after.reloads, after.workers) == (
        before.master_pid,
        before.reloads,
        before.workers,
    )


def test_draining_lets_a_slow_request_finish(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    a, b = instances["a1"].port, instances["b1"].port
    loop.run(router.apply(spec("shop", port, ("rel-a", a, 100), drain_timeout=10)))
    slow: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: slow.append(get(port, "/?delay=1.5")[:2]))
    thread.start()
    wait_for(lambda: loop.run(router.metrics()).apps["shop"].releases["rel-a"].in_flight == 1)
    loop.run(router.apply(spec("shop", port, ("rel-b", b, 100), drain_timeout=10)))
    assert get(port)[:2] == (200, "rel-b")  # new requests go to the new release at once
    metrics = loop.run(router.metrics()).apps["shop"].releases
    assert metrics["rel-a"].in_flight == 1 and metrics["rel-b"].in_flight == 0
    # a reload meanwhile: the slow request is now the old worker's, and still counted
    loop.run(router.apply(spec("blog", free_port(), ("rel-b", b, 100))))
    assert proc(loop, router).old_workers
    assert loop.run(router.metrics()).apps["shop"].releases["rel-a"].in_flight == 1
    thread.join(10)
    assert slow == [(200, "rel-a")]
    # once idle, the drained slot goes to maintenance, well before drain_timeout
    wait_for(lambda: _slot_state(loop, router, "shop", "rel-a") == "maint", timeout=3)
    assert loop.run(router.metrics()).apps["shop"].releases["rel-a"].in_flight == 0


def _slot_state(loop: LoopThread, router: HAProxyRouter, app: str, release: str) -> str:
    return next(s.state for s in router.state.apps[app].slots if s.release == release)


def test_adding_an_app_reloads_without_losing_a_request(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    shop, blog, moved = free_port(), free_port(), free_port()
    loop.run(router.apply(spec("shop", shop, ("rel-a", instances["a1"].port, 100))))
    before = proc(loop, router)
    blog_b = ("rel-b", instances["b1"].port, 100)
    with LoadGenerator(f"http://127.0.0.1:{shop}/", clients=16) as load:
        load.wait_requests(300)
        loop.run(router.apply(spec("blog", blog, blog_b)))
        load.wait_requests(300)
        assert get(blog)[:2] == (200, "rel-b")
        loop.run(router.apply(spec("blog", moved, blog_b)))  # a new public port
        assert get(moved)[:2] == (200, "rel-b")
        load.wait_requests(300)
        loop.run(router.remove("blog"))
        load.wait_requests(300)
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    after = proc(loop, router)
    assert after.master_pid == before.master_pid and after.reloads == before.reloads + 3
    for port in (blog, moved):
        with pytest.raises(ConnectionRefusedError):
            get(port)
    loop.run(router.remove("shop"))
    assert loop.run(router.alive()) and loop.run(router.metrics()).apps == {}


def test_metrics_per_release(loop: LoopThread, router: HAProxyRouter, instances: Instances) -> None:
    port = free_port()
    a, b = instances["a1"].port, instances["b1"].port
    loop.run(router.apply(spec("shop", port, ("rel-a", a, 50), ("rel-b", b, 50))))
    for _ in range(20):
        get(port)
    for _ in range(10):
        get(port, "/?status=503")
    for _ in range(4):
        get(port, "/?delay=0.03")
    # requests are counted from HAProxy's log lines, which arrive a moment after responses
    wait_for(lambda: _requests(loop, router) == {"rel-a": 17, "rel-b": 17}, timeout=30)
    metrics = loop.run(router.metrics())
    assert metrics.backend == "haproxy" and metrics.started_at <= time.time()
    releases = metrics.apps["shop"].releases
    over_25ms = LATENCY_BUCKETS.index(0.025)
    for counters in releases.values():
        assert counters.errors_5xx == 5
        assert counters.latency_buckets[-1] == 17  # nothing slower than 10 s
        # the 2 slow ones are above 25 ms (on a loaded machine others may be too: no bound
        # on how fast the fast ones are)
        assert counters.latency_buckets[over_25ms] <= 15
        assert counters.latency_sum > 0.06
        assert counters.connect_failures == 0 and counters.in_flight == 0
    # counters keep growing across a reload, which starts a new worker at zero
    loop.run(router.apply(spec("blog", free_port(), ("rel-b", b, 100))))
    get(port)
    wait_for(lambda: sum(_requests(loop, router).values()) == 35, timeout=30)
    again = loop.run(router.metrics()).apps["shop"].releases
    assert all(again[r].errors_5xx == 5 for r in again)


def _requests(loop: LoopThread, router: HAProxyRouter) -> dict[str, int]:
    releases = loop.run(router.metrics()).apps["shop"].releases
    return {release: c.requests for release, c in releases.items()}


def test_connect_failures_are_retried_elsewhere(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port, dead = free_port(), free_port()
    loop.run(
        router.apply(spec("shop", port, ("rel-a", instances["a1"].port, 50), ("rel-b", dead, 50)))
    )
    assert all(get(port)[:2] == (200, "rel-a") for _ in range(20))
    wait_for(lambda: _requests(loop, router) == {"rel-a": 20, "rel-b": 0}, timeout=5)
    releases = loop.run(router.metrics()).apps["shop"].releases
    assert releases["rel-b"].connect_failures >= 10
    assert releases["rel-a"].connect_failures == 0


def test_sticky_sessions_pin_a_release(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    a1, a2, b1 = instances["a1"].port, instances["a2"].port, instances["b1"].port
    targets = [("rel-a", a1, 25), ("rel-a", a2, 25), ("rel-b", b1, 50)]
    loop.run(router.apply(spec("shop", port, *targets, sticky=True)))
    status, body, headers = get(port)
    assert headers["Set-Cookie"] == f"conveyor_release={body}; Path=/; HttpOnly"
    pinned = {"Cookie": "conveyor_release=rel-a"}
    seen = [get(port, headers=pinned) for _ in range(40)]
    assert {(s, b) for s, b, _ in seen} == {(200, "rel-a")}
    assert {h["X-Instance"] for _, _, h in seen} == {"a1", "a2"}  # pinned to the release
    assert all(h["Set-Cookie"] is None for _, _, h in seen)
    # a release taken out of rotation releases its clients at once, with a new cookie
    loop.run(router.apply(spec("shop", port, ("rel-a", a1, 0), ("rel-b", b1, 100), sticky=True)))
    status, body, headers = get(port, headers=pinned)
    assert (status, body) == (200, "rel-b")
    assert headers["Set-Cookie"].startswith("conveyor_release=rel-b;")
    # stickiness can be switched off at runtime too
    loop.run(router.apply(spec("shop", port, ("rel-b", b1, 100))))
    assert get(port)[2]["Set-Cookie"] is None


def test_preview_header_reaches_a_release_at_weight_0(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port, dead = free_port(), free_port()
    a1, b1, b2 = instances["a1"].port, instances["b1"].port, instances["b2"].port
    targets = [("rel-a", a1, 100), ("rel-b", b1, 0), ("rel-b", b2, 0), ("rel-down", dead, 0)]
    loop.run(router.apply(spec("shop", port, *targets, sticky=True)))
    plain = [get(port) for _ in range(20)]
    assert {(status, body) for status, body, _ in plain} == {(200, "rel-a")}
    preview_b = {PREVIEW_HEADER: "rel-b"}
    previews = [get(port, headers=preview_b) for _ in range(30)]
    assert {(status, body) for status, body, _ in previews} == {(200, "rel-b")}
    assert {h["X-Instance"] for _, _, h in previews} == {"b1", "b2"}
    assert all(h["Set-Cookie"] is None for _, _, h in previews)
    # the header wins over a sticky cookie
    pinned = {"Cookie": "conveyor_release=rel-a", **preview_b}
    status, body, headers = get(port, headers=pinned)
    assert (status, body, headers["Set-Cookie"]) == (200, "rel-b", None)
    # never another release: an unknown one, or one whose instance is down, is a 503
    status, body, _ = get(port, headers={PREVIEW_HEADER: "rel-x"})
    assert (status, body) == (503, "release rel-x is not available on this host\n")
    status, body, _ = get(port, headers={PREVIEW_HEADER: "rel-down"})
    assert status == 503 and "rel-a" not in body
    wait_for(
        lambda: _requests(loop, router) == {"rel-a": 20, "rel-b": 31, "rel-down": 1}, timeout=5
    )
    releases = loop.run(router.metrics()).apps["shop"].releases
    assert releases["rel-b"].errors_5xx == 0 and releases["rel-b"].latency_buckets[-1] == 31
    assert releases["rel-down"].connect_failures >= 1
    assert releases["rel-a"].connect_failures == 0


def test_preview_follows_the_targets_across_runtime_updates_and_reloads(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    a1, b1 = instances["a1"].port, instances["b1"].port
    preview_a, preview_b = {PREVIEW_HEADER: "rel-a"}, {PREVIEW_HEADER: "rel-b"}
    loop.run(router.apply(spec("shop", port, ("rel-a", a1, 100), ("rel-b", b1, 0))))
    before = proc(loop, router)
    assert get(port, headers=preview_b)[:2] == (200, "rel-b")
    loop.run(router.apply(spec("shop", port, ("rel-a", a1, 0), ("rel-b", b1, 100))))
    assert {get(port)[1] for _ in range(10)} == {"rel-b"}
    assert {get(port, headers=preview_a)[1] for _ in range(10)} == {"rel-a"}
    assert proc(loop, router).reloads == before.reloads  # through the Runtime API alone
    # a reload (another app) starts a worker from the files: it routes previews the same
    loop.run(router.apply(spec("blog", free_port(), ("rel-b", b1, 100))))
    assert proc(loop, router).reloads == before.reloads + 1
    assert {get(port, headers=preview_a)[1] for _ in range(10)} == {"rel-a"}
    assert {get(port)[1] for _ in range(10)} == {"rel-b"}
    # a release that is no target any more is not reachable
    loop.run(router.apply(spec("shop", port, ("rel-b", b1, 100))))
    assert get(port, headers=preview_a)[0] == 503


def test_a_restarted_driver_adopts_the_running_haproxy(
    loop: LoopThread, make_router: MakeRouter, instances: Instances
) -> None:
    port = free_port()
    a, b = instances["a1"].port, instances["b1"].port
    first = make_router()
    loop.run(first.start())
    loop.run(first.apply(spec("shop", port, ("rel-a", a, 100))))
    for _ in range(10):
        get(port)
    wait_for(lambda: _requests(loop, first) == {"rel-a": 10}, timeout=5)
    loop.run(first.close())  # the agent exits; HAProxy stays
    assert get(port)[:2] == (200, "rel-a")
    before = proc(loop, first)

    second = make_router()
    loop.run(second.start())
    after = proc(loop, second)
    assert (after.master_pid, after.reloads, after.workers) == (
        before.master_pid,
        before.reloads,
        before.workers,
    )
    counters = loop.run(second.metrics()).apps["shop"].releases["rel-a"]
    # the request served while no driver listened to HAProxy's logs is not counted
    assert counters.requests == 10 and counters.latency_buckets[-1] == 10
    loop.run(second.apply(spec("shop", port, ("rel-a", a, 50), ("rel-b", b, 50))))
    assert {get(port)[1] for _ in range(10)} == {"rel-a", "rel-b"}
    assert proc(loop, second).reloads == before.reloads
    # the new driver receives the log lines: counting goes on
    wait_for(lambda: _requests(loop, second) == {"rel-a": 15, "rel-b": 5}, timeout=5)


def test_killed_haproxy_is_started_again(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    target = ("rel-a", instances["a1"].port, 100)
    loop.run(router.apply(spec("shop", port, target)))
    old = proc(loop, router)
    for pid in (old.master_pid, *old.workers):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not loop.run(router.alive()), timeout=5)
    loop.run(router.start())
    loop.run(router.apply(spec("shop", port, target)))
    assert get(port)[:2] == (200, "rel-a")
    new = proc(loop, router)
    assert new.master_pid != old.master_pid
    # counters belong to the HAProxy process: they start again with it
    wait_for(lambda: _requests(loop, router) == {"rel-a": 1}, timeout=5)


def test_a_port_in_use_is_refused_and_nothing_changes(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    port = free_port()
    loop.run(router.apply(spec("shop", port, ("rel-a", instances["a1"].port, 100))))
    config = router.paths.config.read_text()
    before = proc(loop, router)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(RouterError, match=f"cannot listen on 127.0.0.1:{taken}"):
            loop.run(router.apply(spec("blog", taken, ("rel-b", instances["b1"].port, 100))))
        with pytest.raises(RouterError, match="already the public port of app shop"):
            loop.run(router.apply(spec("blog", port, ("rel-b", instances["b1"].port, 100))))
    assert router.paths.config.read_text() == config
    assert set(router.state.apps) == {"shop"}
    assert proc(loop, router).reloads == before.reloads
    assert get(port)[:2] == (200, "rel-a")


def test_a_failed_reload_restores_the_previous_configuration(
    loop: LoopThread, router: HAProxyRouter, instances: Instances
) -> None:
    # apply() refuses a taken port before reloading; a port taken between that check and
    # the reload makes HAProxy's new worker fail, which the driver must undo.
    port = free_port()
    loop.run(router.apply(spec("shop", port, ("rel-a", instances["a1"].port, 100))))
    config = router.paths.config.read_text()
    before = proc(loop, router)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        blog = AppState(app="blog", bind="127.0.0.1", port=taken, slots=new_slots(2))
        with pytest.raises(
            RouterError, match=f"reload failed: app blog: cannot listen on .*:{taken}"
        ):
            loop.run(router._reconfigure({**router.state.apps, "blog": blog}))
    after = proc(loop, router)
    assert after.master_pid == before.master_pid and after.failed == 0
    assert router.paths.config.read_text() == config
    assert not router.paths.pins_map("blog").exists()
    assert get(port)[:2] == (200, "rel-a")


def test_bad_input_is_refused(loop: LoopThread, router: HAProxyRouter) -> None:
    port = free_port()
    with pytest.raises(RouterError, match=r"two targets on 127\.0\.0\.1"):
        loop.run(router.apply(spec("shop", port, ("rel-a", 9001, 50), ("rel-b", 9001, 50))))
    with pytest.raises(RouterError, match="release id"):
        loop.run(router.apply(spec("shop", port, ("rel a", 9001, 50))))
    with pytest.raises(RouterError, match="no free HAProxy slot"):
        targets = [(f"r{i}", 9000 + i, 10) for i in range(9)]
        loop.run(router.apply(spec("shop", port, *targets)))
    assert router.state.apps == {}
