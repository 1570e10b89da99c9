"""The driver contract: the same tests against both drivers (embedded router, HAProxy).

Weights, changes under load, drain, the preview header, metrics and a restarted driver.
Each driver gets one router for the module; each test uses its own app and public port.
What only one driver has (HAProxy's reloads and slot states, the embedded proxy's HTTP
framing) is tested beside it, in tests/router_haproxy and tests/router.
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
from tests.fleet import LoadGenerator
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
    assert results and results[0].status_code == 200 and results[0].text == "a slow\n"
    wait_for(lambda: in_flight() == 0, timeout=5, interval=0.05)
    loop.run(router.remove(spec.app))


def _targets(releases: dict[str, Backend], **weights: int) -> list[Target]:
    return [Target(release=r, port=releases[r].port, weight=w) for r, w in weights.items()]


def test_weight_changes_and_target_swaps_under_load_lose_nothing(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    spec = serve(loop, router, "loaded", a=(releases["a"], 100))
    steps = [
        _targets(releases, a=90, b=10),
        _targets(releases, a=0, b=100),
        _targets(releases, b=100),  # a leaves the spec
        _targets(releases, a=10, b=90),  # a rollback-like return of a
        _targets(releases, a=100),
    ]
    with LoadGenerator(f"http://127.0.0.1:{spec.port}/", clients=8) as load:
        load.wait_requests(200)
        for step in steps:
            loop.run(router.apply(spec.model_copy(update={"targets": step})))
            load.wait_requests(200)
    result = load.result
    assert result.failures == 0, (result.errors[:5], result.statuses)
    assert set(result.statuses) == {200} and set(result.releases) == {"a", "b"}
    loop.run(router.remove(spec.app))


def test_a_new_driver_adopts_the_running_router(
    loop: LoopThread,
    router: Router,
    releases: dict[str, Backend],
    tmp_path: Path,
) -> None:
    """The agent restarts; the router process does not: a new driver on the same paths
    adopts it, with its apps, counters and start time, and drives it from there."""
    first = _make(router.name, tmp_path)
    second = _make(router.name, tmp_path)
    loop.run(first.start())
    try:
        spec = serve(loop, first, "adopted", a=(releases["a"], 100))
        started_at = loop.run(first.metrics()).started_at
        _close(loop, first)
        loop.run(second.start())
        assert loop.run(second.metrics()).started_at == started_at
        assert set(bodies(spec, 5)) == {"a"}
        loop.run(second.apply(spec.model_copy(update={"targets": _targets(releases, b=100)})))
        wait_for(lambda: set(bodies(spec, 10)) == {"b"}, timeout=10)
    finally:
        loop.run(second.stop())
        _close(loop, second)


def _close(loop: LoopThread, driver: Router) -> None:
    """What an exiting agent does to its driver: HAProxy's stops its log receiver; the
    embedded router's holds nothing open between calls."""
    close = getattr(driver, "close", None)
    if close is not None:
        loop.run(close())


FLAGS_CASES = [
    ("new-checkout", {"enabled": True}),
    ("half", {"enabled": True, "rollout": 50, "user_ids": ["vip-1"]}),
    ("dark", {}),
    (
        "search",
        {
            "enabled": True,
            "rollout": 70,
            "variants": [{"name": "a", "weight": 30}, {"name": "b", "weight": 70}],
        },
    ),
    (
        "pros",
        {
            "enabled": True,
            "constraints": [
                {"context_name": "userId", "operator": "STR_ENDS_WITH", "values": ["7", "9"]}
            ],
        },
    ),
    (
        "plan",
        {
            "enabled": True,
            "constraints": [{"context_name": "plan", "operator": "IN", "values": ["pro"]}],
        },
    ),
    # hash prefixes of every length modulo 4 (HAProxy's Lua mixes a prefix's whole blocks
    # once): "half:" 1, "gamma:" 2, "search:" 3, "pay:" 0
    (
        "gamma",
        {
            "enabled": True,
            "rollout": 35,
            "variants": [
                {"name": "x", "weight": 20},
                {"name": "y", "weight": 30},
                {"name": "z", "weight": 50},
            ],
        },
    ),
    ("pay", {"enabled": True, "rollout": 60}),
]


def test_the_flags_header_is_the_same_for_each_user(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    from conveyor.flags import Context, FlagSet
    from conveyor.flags.definition import NamedFlag, to_document
    from conveyor.flags.header import header_value
    from conveyor.protocol.desired import HostFlags
    from conveyor.protocol.flags import FlagState

    document = to_document([NamedFlag(n, "", FlagState.model_validate(s)) for n, s in FLAGS_CASES])
    spec = serve(loop, router, "flagged", a=(releases["a"], 100))
    spec = spec.model_copy(update={"flags": HostFlags(stickiness="cookie:uid", document=document)})
    loop.run(router.apply(spec))
    ours = FlagSet(document)
    url = f"http://127.0.0.1:{spec.port}/headers"

    def seen(uid: str, extra: dict[str, str] | None = None) -> str | None:
        headers = {"Cookie": f"theme=dark; uid={uid}", **(extra or {})}
        got: dict[str, str] = http.get(url, headers=headers).json()
        return {k.lower(): v for k, v in got.items()}.get("x-conveyor-flags")

    with httpx.Client(timeout=10) as http:
        wait_for(lambda: seen("u-0") is not None, timeout=10, interval=0.1)
        for i in range(300):
            uid = f"u-{i}" if i % 3 else f"customer-{i}@example.com"
            assert seen(uid) == header_value(ours, Context(user_id=uid)), uid
        # an id longer than any kept: answered all the same, twice
        for uid in ("L" * 300, "L" * 300):
            assert seen(uid) == header_value(ours, Context(user_id=uid))
        # a client's own header never reaches the app
        assert seen("vip-1", {"X-Conveyor-Flags": "dark=on"}) == header_value(
            ours, Context(user_id="vip-1")
        )
        # a change reaches it without a restart of anything: the kill switch
        off = to_document(
            [
                NamedFlag(n, "", FlagState.model_validate({**s, "enabled": False}))
                for n, s in FLAGS_CASES
            ]
        )
        loop.run(
            router.apply(
                spec.model_copy(update={"flags": HostFlags(stickiness="cookie:uid", document=off)})
            )
        )
        everything_off = "; ".join(f"{n}=off" for n in sorted(n for n, _ in FLAGS_CASES))
        wait_for(lambda: seen("u-1") == everything_off, timeout=10, interval=0.1)
        # users read from a header now (HAProxy: a reload, its backend then keeping each
        # user's answers natively): asked twice, a kept answer is the same; new flags on the
        # same header change every kept user's answer at once
        by_header = spec.model_copy(
            update={"flags": HostFlags(stickiness="header:X-User", document=document)}
        )
        loop.run(router.apply(by_header))

        def told(uid: str) -> str | None:
            got: dict[str, str] = http.get(url, headers={"X-User": uid}).json()
            return {k.lower(): v for k, v in got.items()}.get("x-conveyor-flags")

        wait_for(lambda: told("h-0") == header_value(ours, Context(user_id="h-0")), timeout=10)
        for _ in range(2):
            for i in range(100):
                assert told(f"h-{i}") == header_value(ours, Context(user_id=f"h-{i}")), i
        loop.run(
            router.apply(
                by_header.model_copy(
                    update={"flags": HostFlags(stickiness="header:X-User", document=off)}
                )
            )
        )
        wait_for(lambda: told("h-0") == everything_off, timeout=10, interval=0.1)
        assert all(told(f"h-{i}") == everything_off for i in range(100))
        # no flags any more: no header
        loop.run(router.apply(spec.model_copy(update={"flags": None})))
        wait_for(lambda: seen("u-1") is None, timeout=10, interval=0.1)
    loop.run(router.remove(spec.app))


def test_the_answers_of_a_guarded_flag_are_counted(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    """What a guarded rollout's judge reads: requests, 5xx and latency per answer of the
    flags under a guarded rollout, and nothing for the others."""
    from conveyor.flags import Context, FlagSet
    from conveyor.flags.definition import NamedFlag, to_document
    from conveyor.flags.header import answers
    from conveyor.protocol.desired import HostFlags
    from conveyor.protocol.flags import FlagState

    cases = [("guarded", {"enabled": True, "rollout": 50}), *FLAGS_CASES]
    document = to_document([NamedFlag(n, "", FlagState.model_validate(s)) for n, s in cases])
    spec = serve(loop, router, "guarded", a=(releases["a"], 100))
    flags = HostFlags(stickiness="cookie:uid", document=document, guarded=["guarded", "search"])
    spec = spec.model_copy(update={"flags": flags})
    loop.run(router.apply(spec))
    ours = FlagSet(document)
    expected: dict[str, tuple[int, int]] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{spec.port}", timeout=10) as http:
        # the flags reach the router (HAProxy: through its Runtime API) before counting
        wait_for(
            lambda: (
                "x-conveyor-flags" in http.get("/headers", headers={"Cookie": "uid=w"}).text.lower()
            ),
            timeout=10,
            interval=0.1,
        )
        for i in range(40):
            uid = f"u-{i}"
            for path in ("/", "/status/503"):
                assert http.get(path, headers={"Cookie": f"uid={uid}"}).status_code in (200, 503)
            for answer in answers(ours, Context(user_id=uid)):
                if answer.partition("=")[0] in ("guarded", "search"):
                    requests, errors = expected.get(answer, (0, 0))
                    expected[answer] = (requests + 2, errors + 1)
    assert {a.partition("=")[2] for a in expected if a.startswith("guarded=")} == {"on", "off"}

    def counted() -> dict[str, tuple[int, int]]:
        found = loop.run(router.metrics()).apps.get(spec.app)
        flagged = found.flags if found is not None else {}
        # the wait's request for uid "w" counted too: only the 40 users' are compared
        return {k: (c.requests, c.errors_5xx) for k, c in flagged.items()}

    def settled() -> bool:
        got = counted()
        return set(got) >= set(expected) and all(
            got[k][0] >= want[0] and got[k][1] >= want[1] for k, want in expected.items()
        )

    wait_for(settled, timeout=15, interval=0.2)
    got = counted()
    # besides the 40 users' 80 requests, only the waits' requests (200s) for user "w"
    extra = {k: (got[k][0] - v[0], got[k][1] - v[1]) for k, v in expected.items()}
    assert all(errors == 0 for _, errors in extra.values()), got
    assert sum(r for r, _ in extra.values()) <= 2 * 200, got
    assert not [k for k in got if k.partition("=")[0] not in ("guarded", "search")], got
    found = loop.run(router.metrics()).apps[spec.app].flags
    on = found["guarded=on"]
    assert on.latency_buckets[-1] == on.requests  # the histogram's +Inf is every request
    loop.run(router.remove(spec.app))
