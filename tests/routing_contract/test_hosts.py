"""Apps told apart by host name and path on one shared port, against both router drivers.

Issue 14 point 1: each app with domains is served on the host's shared port; the Host
header (then the longest path prefix) picks the app; a name no app claims gets 404,
never another app's answer; a second app claiming a name already served is refused and
nothing changes; weights, drains and counters stay per app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.agent.routing.spec import Router, RouterError, RouteSpec, Target
from tests.fleet import LoadGenerator
from tests.helpers import free_port, wait_for
from tests.router.backend import Backend
from tests.router_haproxy.support import LoopThread
from tests.routing_contract.test_contract import _make

DRIVERS = ["embedded", "haproxy"]


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="module", params=DRIVERS)
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
    made = {r: Backend(r).start() for r in ("a1", "a2", "b1", "c1")}
    try:
        yield made
    finally:
        for backend in made.values():
            backend.stop()


def _spec(app: str, port: int, domains: list[str], **weights: tuple[Backend, int]) -> RouteSpec:
    return RouteSpec(
        app=app,
        port=port,
        bind="127.0.0.1",
        targets=[Target(release=r, port=b.port, weight=w) for r, (b, w) in weights.items()],
        drain_timeout=5,
        domains=domains,
    )


def get(port: int, host: str | None, path: str = "/") -> httpx.Response:
    headers = {"Host": host} if host is not None else {}
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)


def _answer(port: int, host: str, path: str = "/") -> str:
    try:
        r = get(port, host, path)
    except httpx.HTTPError as exc:
        return f"error {exc}"
    return f"{r.status_code} {r.text.strip()}"


def test_two_apps_on_one_port_by_host_name_unknown_is_404(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    port = free_port()
    shop = _spec("shop", port, ["shop.example.com", "*.shop.example.com"], a1=(releases["a1"], 100))
    blog = _spec("blog", port, ["blog.example.com"], b1=(releases["b1"], 100))
    loop.run(router.apply(shop))
    loop.run(router.apply(blog))
    try:
        wait_for(lambda: _answer(port, "blog.example.com") == "200 b1", timeout=10)
        assert _answer(port, "shop.example.com") == "200 a1"
        assert _answer(port, "SHOP.example.com:80") == "200 a1"
        assert _answer(port, "www.shop.example.com") == "200 a1"
        assert _answer(port, "blog.example.com") == "200 b1"
        unknown = get(port, "other.example.com")
        assert unknown.status_code == 404, unknown.text
        assert "a1" not in unknown.text and "b1" not in unknown.text
        # weights stay per app: shop moves to a2, blog is untouched
        loop.run(
            router.apply(
                shop.model_copy(
                    update={"targets": [Target(release="a2", port=releases["a2"].port, weight=100)]}
                )
            )
        )
        wait_for(lambda: _answer(port, "shop.example.com") == "200 a2", timeout=10)
        assert _answer(port, "blog.example.com") == "200 b1"

        # counted per app
        def counted() -> tuple[int, int]:
            apps = loop.run(router.metrics()).apps
            shop_n = sum(c.requests for c in apps["shop"].releases.values())
            blog_n = sum(c.requests for c in apps["blog"].releases.values())
            return shop_n, blog_n

        wait_for(lambda: min(counted()) >= 2, timeout=15, interval=0.2)
        # one app leaves: its names get 404, the other app is still served
        loop.run(router.remove("blog"))
        wait_for(lambda: _answer(port, "blog.example.com").startswith("404"), timeout=10)
        assert _answer(port, "shop.example.com") == "200 a2"
    finally:
        loop.run(router.remove("shop"))
        loop.run(router.remove("blog"))


def test_path_prefix_stripped_or_kept(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    port = free_port()
    site = _spec("site", port, ["site.example.com"], a1=(releases["a1"], 100))
    api = _spec("api", port, ["site.example.com"], b1=(releases["b1"], 100)).model_copy(
        update={"path_prefix": "/api", "strip_prefix": True}
    )
    loop.run(router.apply(site))
    loop.run(router.apply(api))
    try:
        wait_for(lambda: _answer(port, "site.example.com", "/api") == "200 b1", timeout=10)
        assert _answer(port, "site.example.com", "/") == "200 a1"
        assert _answer(port, "site.example.com", "/apix") == "200 a1"  # whole segments only
        assert _answer(port, "site.example.com", "/api/x?y=1") == "200 b1"
        # stripped: /api/headers reaches the instance as /headers (it answers with JSON)
        headers = get(port, "site.example.com", "/api/headers")
        assert headers.status_code == 200 and "host" in json.loads(headers.text)
        # kept: the instance sees /api/headers, which is not its /headers
        loop.run(router.apply(api.model_copy(update={"strip_prefix": False})))
        wait_for(lambda: _answer(port, "site.example.com", "/api/headers") == "200 b1", timeout=10)
    finally:
        loop.run(router.remove("api"))
        loop.run(router.remove("site"))


def test_a_second_app_claiming_a_served_name_is_refused_and_nothing_changes(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    port = free_port()
    loop.run(router.apply(_spec("first", port, ["taken.example.com"], a1=(releases["a1"], 100))))
    try:
        wait_for(lambda: _answer(port, "taken.example.com") == "200 a1", timeout=10)
        second = _spec("second", port, ["free.example.com", "taken.example.com"])
        second = second.model_copy(
            update={"targets": [Target(release="c1", port=releases["c1"].port, weight=100)]}
        )
        with pytest.raises(RouterError) as refused:
            loop.run(router.apply(second))
        assert "first" in str(refused.value) and "second" in str(refused.value)
        assert _answer(port, "taken.example.com") == "200 a1"
        assert _answer(port, "free.example.com").startswith("404")
        # an app of its own on the shared port is refused too
        own = _spec("own", port, [], c1=(releases["c1"], 100))
        with pytest.raises(RouterError):
            loop.run(router.apply(own))
        assert _answer(port, "taken.example.com") == "200 a1"
    finally:
        loop.run(router.remove("first"))


def test_one_app_changes_under_load_while_the_other_loses_nothing(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    port = free_port()
    shop = _spec("shop-load", port, ["shop.example.com"], a1=(releases["a1"], 100))
    blog = _spec("blog-load", port, ["blog.example.com"], b1=(releases["b1"], 100))
    loop.run(router.apply(shop))
    loop.run(router.apply(blog))
    url = f"http://127.0.0.1:{port}/"
    steps = [{"a1": 50, "a2": 50}, {"a1": 0, "a2": 100}, {"a2": 100}, {"a1": 100}]
    try:
        wait_for(lambda: _answer(port, "blog.example.com") == "200 b1", timeout=10)
        with (
            LoadGenerator(url, clients=2, rate=25, host="shop.example.com") as on_shop,
            LoadGenerator(url, clients=2, rate=25, host="blog.example.com") as on_blog,
        ):
            on_shop.wait_requests(20)
            for step in steps:
                targets = [
                    Target(release=r, port=releases[r].port, weight=w) for r, w in step.items()
                ]
                loop.run(router.apply(shop.model_copy(update={"targets": targets})))
                on_shop.wait_requests(20)
            on_blog.wait_requests(20)
        for load, expected in ((on_shop, {"a1", "a2"}), (on_blog, {"b1"})):
            result = load.result
            assert result.failures == 0, (result.errors[:5], result.statuses)
            assert set(result.statuses) == {200} and set(result.releases) == expected
    finally:
        loop.run(router.remove("shop-load"))
        loop.run(router.remove("blog-load"))


def test_the_driver_reapplied_after_a_restart_keeps_both_apps(
    loop: LoopThread, router: Router, releases: dict[str, Backend], tmp_path: Path
) -> None:
    """What the agent does when its router restarts: apply every spec again."""
    port = free_port()
    specs = [
        _spec("one", port, ["one.example.com"], a1=(releases["a1"], 100)),
        _spec("two", port, ["two.example.com"], b1=(releases["b1"], 100)),
    ]
    for spec in specs:
        loop.run(router.apply(spec))
    try:
        for spec in specs:  # applying the same specs again changes nothing
            loop.run(router.apply(spec))
        wait_for(lambda: _answer(port, "two.example.com") == "200 b1", timeout=10)
        assert _answer(port, "one.example.com") == "200 a1"
    finally:
        for spec in specs:
            loop.run(router.remove(spec.app))


def test_an_app_moves_between_its_own_port_and_the_shared_one(
    loop: LoopThread, router: Router, releases: dict[str, Backend]
) -> None:
    own_port, shared_port = free_port(), free_port()
    own = _spec("mover", own_port, [], a1=(releases["a1"], 100))
    loop.run(router.apply(own))
    try:
        wait_for(lambda: _answer(own_port, "anything") == "200 a1", timeout=10)
        named = own.model_copy(update={"port": shared_port, "domains": ["mover.example.com"]})
        loop.run(router.apply(named))
        wait_for(lambda: _answer(shared_port, "mover.example.com") == "200 a1", timeout=10)
        assert _answer(shared_port, "other.example.com").startswith("404")
        wait_for(lambda: _answer(own_port, "anything").startswith("error"), timeout=10)
        loop.run(router.apply(own))
        wait_for(lambda: _answer(own_port, "anything") == "200 a1", timeout=10)
        wait_for(lambda: _answer(shared_port, "mover.example.com").startswith("error"), timeout=10)
    finally:
        loop.run(router.remove("mover"))
