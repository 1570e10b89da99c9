"""ACME against a real Pebble: a certificate obtained over HTTP-01 answered by a real
router, cached, and a refused challenge reported as such (testbed/pebble.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.agent.acme import AcmeCertificates
from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.certs import CertError, check_pair
from conveyor.protocol import TlsSpec
from testbed.pebble import Pebble, pebble_installed
from tests.helpers import free_port
from tests.router_haproxy.support import LoopThread

ADDRESS = "127.0.60.3"

pytestmark = pytest.mark.skipif(not pebble_installed(), reason="pebble is not installed")


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


def test_obtained_cached_and_refused(loop: LoopThread, tmp_path: Path) -> None:
    http_port = free_port(ADDRESS)
    pebble = Pebble(tmp_path / "pebble", ADDRESS, ADDRESS, http_port).start()
    router = EmbeddedRouter(tmp_path / "router.sock", tmp_path / "router.log")
    loop.run(router.start())
    try:
        acme = AcmeCertificates(
            tmp_path / "agent",
            lambda answers: router.challenges(ADDRESS, http_port, answers),
            verify=str(pebble.ca_file),
        )
        tls = TlsSpec(acme_directory=pebble.directory, acme_email="ops@example.com")
        domains = ["shop.example.com", "www.shop.example.com"]
        assert acme.due("shop", domains, tls)
        loop.run(acme.ensure("shop", domains, tls), timeout=120)
        pair = acme.pair("shop", domains, tls)
        assert pair is not None
        info = check_pair(*pair, domains, dt.datetime.now(dt.UTC))
        assert set(info.names) == set(domains)
        assert not acme.due("shop", domains, tls)
        # other names: not this certificate
        assert acme.pair("shop", ["shop.example.com"], tls) is None

        # a name the CA cannot reach: refused, saying so
        pebble.resolve("refused.example.com", "127.0.60.99")
        with pytest.raises(CertError, match=r"refused the certificate for refused\.example\.com"):
            loop.run(acme.ensure("other", ["refused.example.com"], tls), timeout=120)
        assert acme.pair("other", ["refused.example.com"], tls) is None
    finally:
        loop.run(router.stop())
        pebble.stop()
