"""HTTPS on the shared port, against both router drivers (issue 14 point 2).

Each app with tls is served by SNI with its own certificate on the shared HTTPS port;
plain HTTP is redirected (or not, with redirect_http false); a new certificate replaces
the old one at run time, without a dropped request; a certificate the router cannot
load is refused and the previous one keeps serving; the ACME HTTP-01 answers the agent
sets are served on the plain port for any name. Certificates from trustme; checked with
Python's ssl and `openssl s_client`.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.haproxy_runtime import show_proc
from conveyor.agent.routing.spec import Router, RouterError, RouteSpec, Target, TlsRoute
from conveyor.certs import served_pem
from testbed.fleet import LoadGenerator
from tests.helpers import free_port, wait_for
from tests.router.backend import Backend
from tests.router_haproxy.support import LoopThread
from tests.routing_contract.test_contract import _make

# embedded-2w: the embedded router with two worker processes (each loads the certificates)
DRIVERS = ["embedded", "embedded-2w", "haproxy"]


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
    base = tmp_path_factory.mktemp(request.param)
    driver: Router
    if request.param == "embedded-2w":
        driver = EmbeddedRouter(base / "router.sock", base / "router.log", workers=2)
    else:
        driver = _make(request.param, base)
    loop.run(driver.start())
    try:
        yield driver
    finally:
        loop.run(driver.stop())


@pytest.fixture(scope="module")
def releases() -> Iterator[dict[str, Backend]]:
    made = {r: Backend(r).start() for r in ("a1", "b1")}
    try:
        yield made
    finally:
        for backend in made.values():
            backend.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pem(ca: trustme.CA, folder: Path, *names: str) -> str:
    leaf = ca.issue_cert(*names)
    pem = served_pem(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    path = folder / f"{names[0]}-{len(list(folder.iterdir()))}.pem"
    path.write_bytes(pem)
    return str(path)


def _spec(
    app: str, ports: tuple[int, int], domain: str, pem: str, backend: Backend, redirect: bool = True
) -> RouteSpec:
    return RouteSpec(
        app=app,
        port=ports[0],
        bind="127.0.0.1",
        targets=[Target(release=backend.release, port=backend.port, weight=100)],
        drain_timeout=5,
        domains=[domain],
        tls=TlsRoute(port=ports[1], pem=pem, redirect_http=redirect),
    )


def _client(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https_get(ca: trustme.CA, port: int, name: str, path: str = "/") -> httpx.Response:
    """GET https://name:port/path, connecting to 127.0.0.1, verified against the CA."""
    with httpx.Client(verify=_client(ca), timeout=10) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"Host": name},
            extensions={"sni_hostname": name},
        )


def served_serial(ca: trustme.CA, port: int, name: str) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _client(ca).wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def _reloads(loop: LoopThread, router: Router) -> int | None:
    if not isinstance(router, HAProxyRouter):
        return None
    return loop.run(show_proc(router.paths)).reloads


def _answer(ca: trustme.CA, port: int, name: str) -> str:
    try:
        r = https_get(ca, port, name)
    except (httpx.HTTPError, ssl.SSLError) as exc:
        return f"error {exc}"
    return f"{r.status_code} {r.text.strip()}"


def test_sni_redirect_swap_and_bad_certificate(
    loop: LoopThread,
    router: Router,
    releases: dict[str, Backend],
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    ports = (free_port(), free_port())
    shop_pem = _pem(ca, tmp_path, "shop.example.com")
    shop = _spec("shop", ports, "shop.example.com", shop_pem, releases["a1"])
    blog = _spec(
        "blog",
        ports,
        "blog.example.com",
        _pem(ca, tmp_path, "blog.example.com"),
        releases["b1"],
        redirect=False,
    )
    loop.run(router.apply(shop))
    loop.run(router.apply(blog))
    try:
        wait_for(lambda: _answer(ca, ports[1], "blog.example.com") == "200 b1", timeout=15)
        # each name gets its own certificate (verified: the name must match)
        assert _answer(ca, ports[1], "shop.example.com") == "200 a1"
        headers = https_get(ca, ports[1], "shop.example.com", "/headers").json()
        assert headers.get("x-forwarded-proto") == "https", headers
        # openssl s_client sees the same
        if shutil.which("openssl"):
            ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            out = subprocess.run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{ports[1]}",
                    "-servername",
                    "blog.example.com",
                    "-CAfile",
                    str(tmp_path / "ca.pem"),
                    "-verify_hostname",
                    "blog.example.com",
                    "-verify_return_error",
                    "-brief",
                ],
                input=b"",
                capture_output=True,
                timeout=20,
                check=False,
            )
            text = (out.stdout + out.stderr).decode(errors="replace")
            assert out.returncode == 0 and "Verification: OK" in text, text
        # plain HTTP: shop redirects to HTTPS with its path, blog (redirect_http false) serves
        plain = httpx.get(
            f"http://127.0.0.1:{ports[0]}/x?y=1", headers={"Host": "shop.example.com"}
        )
        assert plain.status_code == 308, plain.text
        assert plain.headers["location"] == f"https://shop.example.com:{ports[1]}/x?y=1"
        blog_plain = httpx.get(
            f"http://127.0.0.1:{ports[0]}/", headers={"Host": "blog.example.com"}
        )
        assert (blog_plain.status_code, blog_plain.text.strip()) == (200, "b1")

        # a new certificate for shop, swapped under paced load: no request fails
        before = served_serial(ca, ports[1], "shop.example.com")
        renewed = shop.model_copy(
            update={"tls": TlsRoute(port=ports[1], pem=_pem(ca, tmp_path, "shop.example.com"))}
        )
        load = LoadGenerator(
            f"https://127.0.0.1:{ports[1]}/",
            clients=4,
            rate=25,
            host="shop.example.com",
            tls=_client(ca),
        )
        reloads = _reloads(loop, router)
        with load:
            load.wait_requests(20)
            loop.run(router.apply(renewed))
            wait_for(lambda: served_serial(ca, ports[1], "shop.example.com") != before, timeout=15)
            load.wait_requests(40)
        result = load.result
        assert not result.errors and result.ok == result.sent, (result.errors[:3], result.statuses)
        assert result.releases.keys() == {"a1"}
        assert _reloads(loop, router) == reloads  # HAProxy: through the Runtime API

        # a file that is no certificate: refused, the renewed one keeps serving
        bad = tmp_path / "bad.pem"
        bad.write_text("not a certificate\n")
        now = served_serial(ca, ports[1], "shop.example.com")
        with pytest.raises(RouterError):
            loop.run(
                router.apply(
                    renewed.model_copy(update={"tls": TlsRoute(port=ports[1], pem=str(bad))})
                )
            )
        assert served_serial(ca, ports[1], "shop.example.com") == now
        assert _answer(ca, ports[1], "shop.example.com") == "200 a1"
    finally:
        loop.run(router.remove("shop"))
        loop.run(router.remove("blog"))


def test_acme_challenges_answered_on_the_plain_port(
    loop: LoopThread, router: Router, releases: dict[str, Backend], ca: trustme.CA, tmp_path: Path
) -> None:
    ports = (free_port(), free_port())
    shop = _spec(
        "acmeshop",
        ports,
        "acme.example.com",
        _pem(ca, tmp_path, "acme.example.com"),
        releases["a1"],
    )
    loop.run(router.apply(shop))
    try:
        loop.run(router.challenges("127.0.0.1", ports[0], {"tok-1": "tok-1.thumb"}))

        def challenge(name: str, token: str) -> tuple[int, str]:
            r = httpx.get(
                f"http://127.0.0.1:{ports[0]}/.well-known/acme-challenge/{token}",
                headers={"Host": name},
                timeout=10,
            )
            return r.status_code, r.text.strip()

        wait_for(lambda: challenge("acme.example.com", "tok-1") == (200, "tok-1.thumb"), timeout=10)
        # any name: a certificate is obtained before its app is routed
        assert challenge("new.example.com", "tok-1") == (200, "tok-1.thumb")
        assert challenge("acme.example.com", "other")[0] == 404
        loop.run(router.challenges("127.0.0.1", ports[0], {}))
        wait_for(lambda: challenge("acme.example.com", "tok-1")[0] == 404, timeout=10)
    finally:
        loop.run(router.challenges("127.0.0.1", ports[0], {}))
        loop.run(router.remove("acmeshop"))


def test_an_app_joining_the_https_port_loses_no_request(
    loop: LoopThread, router: Router, releases: dict[str, Backend], ca: trustme.CA, tmp_path: Path
) -> None:
    """A second app with its own name and certificate joins a shared HTTPS port under paced
    HTTPS load on the first: not one request of the first fails. HAProxy 2.6 reloads for
    it (a backend cannot be added at run time; README "HTTPS for domains"), seamlessly."""
    ports = (free_port(), free_port())
    shop = _spec(
        "joinshop", ports, "join-shop.example.com", _pem(ca, tmp_path, "join-shop.example.com"),
        releases["a1"],
    )  # fmt: skip
    blog = _spec(
        "joinblog", ports, "join-blog.example.com", _pem(ca, tmp_path, "join-blog.example.com"),
        releases["b1"],
    )  # fmt: skip
    loop.run(router.apply(shop))
    try:
        wait_for(lambda: _answer(ca, ports[1], "join-shop.example.com") == "200 a1", timeout=15)
        load = LoadGenerator(
            f"https://127.0.0.1:{ports[1]}/",
            clients=4,
            rate=25,
            host="join-shop.example.com",
            tls=_client(ca),
        )
        reloads = _reloads(loop, router)
        with load:
            load.wait_requests(20)
            loop.run(router.apply(blog))
            wait_for(lambda: _answer(ca, ports[1], "join-blog.example.com") == "200 b1", timeout=15)
            load.wait_requests(40)
        result = load.result
        assert not result.errors and result.ok == result.sent, (result.errors[:3], result.statuses)
        assert result.releases.keys() == {"a1"}
        if reloads is not None:  # HAProxy: the new app's backend came with a reload
            after = _reloads(loop, router)
            assert after is not None and after > reloads, (reloads, after)
    finally:
        loop.run(router.remove("joinshop"))
        loop.run(router.remove("joinblog"))
