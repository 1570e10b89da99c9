"""Pure pieces of the router: the weighted choice, counters, cookies."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor.agent.routing.spec import LATENCY_BUCKETS, RouteSpec
from conveyor.router.backend import _rewrite_head
from conveyor.router.balancer import Balancer
from conveyor.router.metrics import Counters, MetricsRegistry, prometheus_text
from conveyor.router.request_head import rewrite_request_head
from conveyor.router.service import App
from conveyor.router.target import Upstream


def ups(**weights: int) -> list[Upstream]:
    return [Upstream(r, "127.0.0.1", 9000 + i, w) for i, (r, w) in enumerate(weights.items())]


@pytest.mark.parametrize(
    ("weights", "window", "expected"),
    [
        ({"a": 90, "b": 10}, 10, {"a": 9, "b": 1}),
        ({"a": 1, "b": 1}, 2, {"a": 1, "b": 1}),
        ({"a": 50, "b": 30, "c": 20}, 10, {"a": 5, "b": 3, "c": 2}),
        ({"a": 100, "b": 0}, 7, {"a": 7}),
        ({"a": 99, "b": 1}, 100, {"a": 99, "b": 1}),
    ],
)
def test_smooth_weighted_round_robin(
    weights: dict[str, int], window: int, expected: dict[str, int]
) -> None:
    balancer = Balancer(ups(**weights))
    # every consecutive window (aligned) holds the exact shares
    for _ in range(5):
        picks = Counter(u.release for u in (balancer.pick() for _ in range(window)) if u)
        assert picks == expected


def test_choice_skips_down_targets_unless_all_are_down() -> None:
    a, b = ups(a=50, b=50)
    balancer = Balancer([a, b])
    a.down = True
    assert {balancer.pick() for _ in range(10)} == {b}
    b.down = True
    assert {balancer.pick() for _ in range(10)} == {a, b}
    assert balancer.pick(exclude=[a, b]) is None
    assert balancer.pick(exclude=[a]) is b


def test_no_weight_no_choice() -> None:
    assert Balancer(ups(a=0)).pick() is None
    assert Balancer([]).pick() is None


def test_sticky_pick_stays_in_the_release() -> None:
    a1, a2, b = ups(a1=10, a2=10, b=80)
    a2.release = a1.release = "a"
    balancer = Balancer([a1, a2, b])
    assert {balancer.pick_release("a") for _ in range(10)} == {a1, a2}
    assert balancer.pick_release("gone") is None
    a1.down = a2.down = True
    assert balancer.pick_release("a") is None


def test_preview_pick_takes_any_weight_and_never_another_release() -> None:
    a, b1, b2 = ups(a=100, b1=0, b2=0)
    b1.release = b2.release = "b"
    balancer = Balancer([a, b1, b2])
    assert balancer.pick_preview("b") is b1 and balancer.pick_preview("b") is b2  # in turns
    assert balancer.pick_preview("a") is a
    assert balancer.pick_preview("gone") is None
    b1.down = True
    assert {balancer.pick_preview("b") for _ in range(4)} == {b2}
    assert balancer.pick_preview("b", exclude=[b2]) is None
    assert {balancer.pick() for _ in range(4)} == {a}  # weight 0 still takes no ordinary request


def test_counters_histogram_is_cumulative() -> None:
    counters = Counters()
    for latency, status in [(0.0005, 200), (0.001, 200), (0.3, 502), (60.0, 200)]:
        counters.observe(status, latency)
    snap = counters.snapshot()
    assert snap.requests == 4 and snap.errors_5xx == 1
    assert snap.latency_buckets[0] == 2  # <= 1 ms, bound included
    assert snap.latency_buckets[LATENCY_BUCKETS.index(0.5)] == 3
    assert snap.latency_buckets[-1] == 3  # 60 s only in +Inf (the total count)
    assert snap.latency_sum == pytest.approx(60.3015)


def test_prometheus_text_escapes_labels() -> None:
    registry = MetricsRegistry(started_at=0.0)
    registry.counters('we"ird', "r1").observe(200, 0.01)
    text = prometheus_text(registry.snapshot())
    assert 'conveyor_router_requests_total{app="we\\"ird",release="r1"} 1' in text


@pytest.mark.parametrize(
    ("cookie", "release"),
    [
        (b"conveyor_release_shop=abc-1", "abc-1"),
        (b"a=1; conveyor_release_shop=abc-2; b=2", "abc-2"),
        (b"xconveyor_release_shop=no; conveyor_release_shop=yes", "yes"),
        (b"conveyor_release_shopping=no", None),
        (b"other=1", None),
    ],
)
def test_cookie_release(cookie: bytes, release: str | None) -> None:
    app = App(MetricsRegistry(started_at=0.0), RouteSpec(app="shop", port=8000, sticky=True))
    assert app.cookie_release(cookie) == release


@pytest.mark.parametrize(
    ("block", "upgrade", "head", "chunked"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1",
            False,
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n",
            True,
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5"
            b"\r\nX-Hop: 1\r\nContent-Length: 2",
            False,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
            False,
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade",
            True,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
            False,
        ),
    ],
)
def test_response_head_rewrite(block: bytes, upgrade: bool, head: bytes, chunked: bool) -> None:
    rewritten, was_chunked = _rewrite_head(block, upgrade)
    assert bytes(rewritten) == head and was_chunked == chunked


@pytest.mark.parametrize(
    ("headers", "upgrade", "head", "framing"),
    [
        (
            [(b"Host", b"a.example"), (b"Accept", b"*/*")],
            False,
            b"GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.9"
            b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\n\r\n",
            (False, False, False, None, None),
        ),
        (
            [
                (b"X-Forwarded-For", b"1.2.3.4"),
                (b"Connection", b"keep-alive, X-Secret"),
                (b"X-Secret", b"s"),
                (b"Keep-Alive", b"5"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Cookie", b"c=1"),
                (b"X-Conveyor-Release", b"v1"),
                (b"X-Conveyor-Release", b"v2"),
            ],
            False,
            b"GET / HTTP/1.1\r\nCookie: c=1\r\nX-Conveyor-Release: v1\r\n"
            b"X-Conveyor-Release: v2\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"
            b"X-Forwarded-Proto: http\r\nHost: localhost\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            (True, True, True, b"c=1", b"v2"),
        ),
        (
            [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
            True,
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            (False, False, True, None, None),
        ),
    ],
    ids=["plain", "hop-by-hop, chunked, cookie, preview", "upgrade"],
)
def test_request_head_rewrite(
    headers: list[tuple[bytes, bytes]],
    upgrade: bool,
    head: bytes,
    framing: tuple[bool, bool, bool, bytes | None, bytes | None],
) -> None:
    req = rewrite_request_head(b"GET", b"/", headers, b"10.0.0.9", upgrade)
    assert req.head == head
    assert (req.chunked, req.has_body, req.connection, req.cookie, req.preview) == framing


def test_guarded_flags_answers_are_counted_per_app_and_summed_over_workers() -> None:
    from conveyor.router.workers import sum_metrics

    registry = MetricsRegistry(started_at=1.0)
    registry.counters("shop", "r1").observe(200, 0.01)
    on = registry.flag_counters("shop", "new-checkout=on")
    assert registry.flag_counters("shop", "new-checkout=on") is on  # kept across changes
    on.observe(500, 0.01)
    registry.flag_counters("shop", "new-checkout=off").observe(200, 0.01)
    snap = registry.snapshot()
    flags = snap.apps["shop"].flags
    assert (flags["new-checkout=on"].requests, flags["new-checkout=on"].errors_5xx) == (1, 1)
    assert flags["new-checkout=off"].errors_5xx == 0
    total = sum_metrics(snap, [snap])
    assert total.apps["shop"].flags["new-checkout=on"].requests == 2
    assert total.apps["shop"].releases["r1"].requests == 2
