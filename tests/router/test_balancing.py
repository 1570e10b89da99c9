"""Weights, sticky sessions, and changes of targets under load: no request may fail."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.spec import PREVIEW_HEADER, RouteSpec, Target
from tests.fleet import LoadGenerator
from tests.helpers import wait_for
from tests.router.backend import Backend
from tests.router.support import WORKERS, Apps, client, dead_port, release_metrics, run

Instances = Callable[..., list[Backend]]


def test_weighted_split_is_exact_over_small_windows(apps: Apps, instances: Instances) -> None:
    a, b = instances("a", "b")
    spec = apps.serve({"a": (a.port, 90), "b": (b.port, 10)})
    with client(spec) as http:
        releases = [http.get("/").text.strip() for _ in range(1000)]
    assert Counter(releases) == {"a": 900, "b": 100}
    # smooth: every window of 10 consecutive requests holds exactly one b
    for start in range(0, 1000, 10):
        assert releases[start : start + 10].count("b") == 1


def test_sticky_cookie_pins_a_client_to_its_release(apps: Apps, instances: Instances) -> None:
    a, b = instances("a", "b")
    spec = apps.serve({"a": (a.port, 50), "b": (b.port, 50)}, sticky=True)
    cookie = f"conveyor_release_{spec.app}"
    firsts = []
    for _ in range(20):
        with client(spec) as http:
            first = http.get("/")
            assert cookie in first.headers["set-cookie"]
            release = first.text.strip()
            assert http.cookies[cookie] == release
            firsts.append(release)
            for _ in range(10):
                again = http.get("/")
                assert again.text.strip() == release
                assert "set-cookie" not in again.headers
    # Exact with one process; each worker keeps its own turn, so new connections spread
    # over N workers may stray by less than N from the exact split.
    assert all(abs(Counter(firsts)[r] - 10) < WORKERS for r in "ab"), Counter(firsts)
    # a release taken out of traffic releases its clients to the others
    url = f"http://127.0.0.1:{spec.port}/"
    pinned = {"Cookie": f"{cookie}=a"}
    assert httpx.get(url, headers=pinned, trust_env=False).text == "a\n"
    only_b = [
        Target(release="b", port=b.port, weight=100),
        Target(release="a", port=a.port, weight=0),
    ]
    apps.apply(spec.model_copy(update={"targets": only_b}))
    moved = httpx.get(url, headers=pinned, trust_env=False)
    assert moved.text == "b\n" and moved.cookies[cookie] == "b"


def test_preview_header_reaches_a_release_at_weight_0(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    a, b = instances("a", "b")
    targets = [
        Target(release="a", port=a.port, weight=100),
        Target(release="b", port=b.port, weight=0),
        Target(release="down", port=dead_port(), weight=0),
    ]
    spec = apps.serve(targets, sticky=True)
    cookie = f"conveyor_release_{spec.app}"
    with client(spec) as http:
        plain = [http.get("/") for _ in range(20)]
        assert {(r.status_code, r.text) for r in plain} == {(200, "a\n")}
        assert http.cookies[cookie] == "a"
        # the header wins over the sticky cookie (sent along here), and sets none
        previews = [http.get("/", headers={PREVIEW_HEADER: "b"}) for _ in range(10)]
        assert {(r.status_code, r.text) for r in previews} == {(200, "b\n")}
        assert all("set-cookie" not in r.headers for r in previews)
        assert http.cookies[cookie] == "a"
        # never another release: an unknown one, or one whose instance is down, is a 503
        for release in ("nope", "down", "down"):
            refused = http.get("/", headers={PREVIEW_HEADER: release})
            assert refused.status_code == 503
            assert refused.text.startswith(f"release {release} is not available on this host")
        assert http.get("/").text == "a\n"  # the connection stays usable
    assert (a.requests, b.requests) == (21, 10)
    counters = release_metrics(router, spec.app)
    assert (counters["a"].requests, counters["b"].requests) == (21, 10)
    assert counters["b"].errors_5xx == 0 and counters["b"].in_flight == 0
    assert counters["down"].connect_failures == 1


def test_preview_follows_the_targets_not_the_weights(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    a, b = instances("a", "b")

    def targets(**weights: int) -> list[Target]:
        ports = {"a": a.port, "b": b.port}
        return [Target(release=r, port=ports[r], weight=w) for r, w in weights.items()]

    preview_a = {PREVIEW_HEADER: "a"}
    spec = apps.serve(targets(a=100, b=0), drain_timeout=0.5)
    apps.apply(spec.model_copy(update={"targets": targets(a=0, b=100)}))
    results: list[httpx.Response] = []
    slow = threading.Thread(target=get_into, args=(spec, "/slow?s=1", results, preview_a))
    slow.start()
    with client(spec) as http:
        assert {http.get("/").text for _ in range(10)} == {"b\n"}
        assert {http.get("/", headers=preview_a).text for _ in range(5)} == {"a\n"}
    # a's drain timeout cuts what it was serving when it left rotation, not a later preview
    slow.join(timeout=5)
    assert results[0].status_code == 200 and results[0].text == "a slow\n"
    assert release_metrics(router, spec.app)["a"].requests == 6
    # a release that is no target any more is not reachable
    apps.apply(spec.model_copy(update={"targets": targets(b=100)}))
    with client(spec) as http:
        assert http.get("/", headers=preview_a).status_code == 503


def get_into(
    spec: RouteSpec, path: str, results: list[httpx.Response], headers: dict[str, str] | None = None
) -> None:
    with client(spec) as http:
        results.append(http.get(path, headers=headers))


def test_weight_changes_and_target_swaps_under_load_lose_nothing(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    a, b, c = instances("a", "b", "c")

    def targets(**weights: int) -> list[Target]:
        ports = {"a": a.port, "b": b.port, "c": c.port}
        return [Target(release=r, port=ports[r], weight=w) for r, w in weights.items()]

    spec = apps.serve(targets(a=100))
    steps = [
        targets(a=90, b=10),
        targets(a=50, b=50),
        targets(a=0, b=100),
        targets(b=100),
        targets(b=50, c=50),  # a target swap: a is gone, c is new
        targets(c=100),
        targets(a=10, c=90),  # a rollback-like return of a
        targets(a=100),
    ]
    with LoadGenerator(f"http://127.0.0.1:{spec.port}/") as load:
        load.wait_requests(200)
        for step in steps:
            spec = spec.model_copy(update={"targets": step})
            apps.apply(spec)
            load.wait_requests(300)
        # The agent's way to retire an instance: wait for in_flight 0, then stop it.
        wait_for(
            lambda: not release_metrics(router, spec.app)["c"].in_flight, timeout=5, interval=0.01
        )
        c.stop()
        load.wait_requests(300)
    result = load.result
    assert result.errors == []
    assert set(result.statuses) == {200}, result.statuses
    assert set(result.releases) == {"a", "b", "c"}
    counters = release_metrics(router, spec.app)
    assert sum(x.errors_5xx for x in counters.values()) == 0
    assert sum(x.requests for x in counters.values()) == result.sent


def test_drain_timeout_cuts_what_is_left(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    a, b = instances("a", "b")
    spec = apps.serve({"a": (a.port, 100)}, drain_timeout=0.5)
    results: list[httpx.Response] = []
    slow = threading.Thread(target=get_into, args=(spec, "/slow?s=1.8", results))
    slow.start()
    wait_for(
        lambda: release_metrics(router, spec.app)["a"].in_flight == 1, timeout=10, interval=0.02
    )
    started = time.monotonic()
    apps.apply(spec.model_copy(update={"targets": [Target(release="b", port=b.port, weight=100)]}))
    slow.join(timeout=5)
    assert results[0].status_code == 502
    assert time.monotonic() - started < 1.3
    assert release_metrics(router, spec.app)["a"].in_flight == 0


def test_removing_an_app_closes_its_listener_after_in_flight_requests(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    results: list[httpx.Response] = []
    slow = threading.Thread(target=get_into, args=(spec, "/slow?s=0.8", results))
    slow.start()
    wait_for(
        lambda: release_metrics(router, spec.app)["a"].in_flight == 1, timeout=10, interval=0.02
    )
    run(router.remove(spec.app))
    try:
        get_into(spec, "/", [])
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the listener of a removed app still accepts connections")
    slow.join(timeout=5)
    assert results[0].status_code == 200
    assert release_metrics(router, spec.app)["a"].in_flight == 0
    assert spec.app not in run(router.specs())
