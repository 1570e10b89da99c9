"""Two apps on one host's shared port, told apart by host name, through the whole system.

Issue 14 point 1, with real processes: a server, an agent (`--http-port`) and its router
(each backend), two apps whose conveyor.yml give `domains:`. Each is served by its name
on the one port, an unknown name gets 404, one app deploys and rolls back under load
on both with no failed request, and a third app claiming a name already served is
refused, nothing changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.demo.sample import write_sample_app
from tests.fleet import Fleet, LoadGenerator
from tests.helpers import ServerProcess, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADDRESS = "127.0.63.2"
HOSTS = {"web-1": ADDRESS}

# a verify script reaches the app as clients do: the shared port, by its name
VERIFY_SCRIPT = (
    "import os, urllib.request as u; e = os.environ; "
    "u.urlopen(u.Request(e['CONVEYOR_URL'], headers=dict(Host=e['CONVEYOR_HOST'])))"
)
ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1]
    domains: [{domains}]
    verify:
      - http: GET /healthz
      - run: python3 -c "SCRIPT"
""".replace("SCRIPT", VERIFY_SCRIPT)


def deployed(server: ServerProcess, app: str, run: int, timeout: float = 120) -> Any:
    def ended() -> Any:
        found = [
            d
            for d in server.get(f"/api/deployments?app={app}")
            if d["run"] == run and d["environment"] == "production"
        ]
        if found and found[0]["state"] not in (
            "queued",
            "waiting",
            "running",
            "rolling_back",
            "aborting",
        ):
            return found[0]
        return None

    return wait_for(ended, timeout=timeout, interval=0.3)


def run_of(server: ServerProcess, app: str) -> int:
    return int(server.post(f"/api/apps/{app}/runs", {})["id"])


def answer(port: int, host: str) -> tuple[int, str]:
    r = httpx.get(f"http://{ADDRESS}:{port}/", headers={"Host": host}, timeout=10)
    if r.status_code != 200:
        return r.status_code, r.text.strip()
    return 200, str(r.json()["release"])


@pytest.mark.parametrize("router", ["embedded", "haproxy"])
def test_two_apps_by_host_name_on_one_port(
    server: ServerProcess, tmp_path: Path, router: str
) -> None:
    if router == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    http_port = free_port(ADDRESS)
    fleet = Fleet(server, tmp_path, HOSTS, router=router, app="shop")
    fleet.agents["web-1"].args += ["--http-port", str(http_port)]
    try:
        fleet.start()
        blog = tmp_path / "blog"
        write_sample_app(
            blog, "blog", port=fleet.port, extra=ENVIRONMENTS.format(domains="blog.example.com")
        )
        server.add_app("blog", blog)
        fleet.commit("v1", ENVIRONMENTS.format(domains="shop.example.com, www.shop.example.com"))
        shop_v1 = deployed(server, "shop", run_of(server, "shop"))
        blog_v1 = deployed(server, "blog", run_of(server, "blog"))
        assert shop_v1["state"] == "succeeded", shop_v1
        assert blog_v1["state"] == "succeeded", blog_v1
        assert answer(http_port, "shop.example.com") == (200, shop_v1["release"])
        assert answer(http_port, "www.shop.example.com") == (200, shop_v1["release"])
        assert answer(http_port, "blog.example.com") == (200, blog_v1["release"])
        status, _ = answer(http_port, "nobody.example.com")
        assert status == 404

        # shop deploys v2 under load on both names: neither sees an error
        url = f"http://{ADDRESS}:{http_port}/"
        fleet.commit("v2", ENVIRONMENTS.format(domains="shop.example.com, www.shop.example.com"))
        with (
            LoadGenerator(url, clients=2, rate=25, host="shop.example.com") as on_shop,
            LoadGenerator(url, clients=2, rate=25, host="blog.example.com") as on_blog,
        ):
            on_shop.wait_requests(20)
            shop_v2 = deployed(server, "shop", run_of(server, "shop"))
            wait_for(lambda: on_shop.snapshot()[shop_v2["release"]] >= 10, timeout=30)
            # ... and rolls back under the same load
            back = server.post("/api/apps/shop/environments/production/rollback", {})
            assert back["release"] == shop_v1["release"], back

            def rolled_back() -> Any:
                d = server.get(f"/api/deployments/{back['id']}")
                return d if d["state"] in ("succeeded", "failed") else None

            assert wait_for(rolled_back, timeout=60)["state"] == "succeeded"
            wait_for(lambda: answer(http_port, "shop.example.com")[1] == shop_v1["release"])
            on_shop.wait_requests(20)
        assert shop_v2["state"] == "succeeded", shop_v2
        for load in (on_shop, on_blog):
            result = load.result
            assert result.failures == 0, (result.errors[:5], result.statuses)
            assert set(result.statuses) == {200}, result.statuses
        assert set(on_blog.result.releases) == {blog_v1["release"]}
        assert set(on_shop.result.releases) == {shop_v1["release"], shop_v2["release"]}

        # a third app claiming shop's name: refused, naming both apps; nothing changes
        thief = tmp_path / "thief"
        write_sample_app(
            thief, "thief", port=fleet.port, extra=ENVIRONMENTS.format(domains="shop.example.com")
        )
        server.add_app("thief", thief)
        refused = deployed(server, "thief", run_of(server, "thief"))
        assert refused["state"] == "failed", refused
        assert "app shop" in refused["reason"] and "app thief" in refused["reason"], refused
        assert fleet.agents["web-1"].app("thief") is None
        # set by hand on the host: refused the same way
        body = {"releases": [{"release": refused["release"], "weight": 100}]}
        by_hand = server.http.put("/api/hosts/web-1/apps/thief", json=body)
        assert by_hand.status_code in (400, 409, 422), by_hand.text
        assert "app shop" in by_hand.text and "app thief" in by_hand.text, by_hand.text
        assert answer(http_port, "shop.example.com") == (200, shop_v1["release"])
        assert answer(http_port, "blog.example.com") == (200, blog_v1["release"])
    finally:
        fleet.stop_everything()
