"""`tls: acme` through the whole system, against Pebble (issue 14 point 2 acceptance).

Real processes: a server (which orders, trusting Pebble with CONVEYOR_ACME_CA), an agent
(`--http-port`, `--https-port`) and its router (each backend), Pebble validating HTTP-01
for real through that router (the answers in the agent's desired state), its mock
DNS resolving every name to the agent's address. A new domain gets its certificate at
its first deployment (served by SNI, verified up to Pebble's root); plain HTTP is
redirected to HTTPS; Pebble's certificates live 30 s, so the server renews one while
paced load runs over HTTPS, and not one request fails. Then a release whose name the CA
cannot reach (Pebble's DNS sends it where nothing listens) fails its deployment with
what the CA said, and the app keeps its name, certificate and release.
"""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from testbed.fleet import Fleet, LoadGenerator
from testbed.pebble import Pebble, pebble_installed
from tests.e2e.test_hosts import deployed, run_of
from tests.helpers import ServerProcess, free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not pebble_installed(), reason="pebble is not installed"),
]

ADDRESS = "127.0.60.4"
PEBBLE_ADDRESS = "127.0.60.5"
HOSTS = {"web-1": ADDRESS}
NAME = "shop.example.com"

ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1]
    domains: [{name}]
    tls: {{acme: {{directory: '{directory}', email: ops@example.com}}}}
    verify:
      - http: GET /healthz
"""


def _trust(root: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=root)


def https_release(root: str, port: int) -> str:
    with httpx.Client(verify=_trust(root), timeout=10) as client:
        r = client.get(
            f"https://{ADDRESS}:{port}/", headers={"Host": NAME}, extensions={"sni_hostname": NAME}
        )
    r.raise_for_status()
    return str(r.json()["release"])


def served_serial(root: str, port: int) -> int:
    with (
        socket.create_connection((ADDRESS, port), timeout=10) as raw,
        _trust(root).wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("router", ["embedded", "haproxy"])
def test_acme_certificate_at_first_deployment_renewed_under_load(
    tmp_path: Path, router: str
) -> None:
    if router == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    http_port, https_port = free_port(ADDRESS), free_port(ADDRESS)
    pebble = Pebble(tmp_path / "pebble", PEBBLE_ADDRESS, ADDRESS, http_port, validity=30)
    pebble.start()
    # the server orders (deploy/certificates.py): it trusts Pebble's API
    server = ServerProcess(tmp_path / "data", {"CONVEYOR_ACME_CA": str(pebble.ca_file)})
    fleet = Fleet(server.start(), tmp_path, HOSTS, router=router, app="shop")
    fleet.agents["web-1"].args += ["--http-port", str(http_port), "--https-port", str(https_port)]
    try:
        fleet.start()
        fleet.commit("v1", ENVIRONMENTS.format(name=NAME, directory=pebble.directory))
        v1 = deployed(server, "shop", run_of(server, "shop"))
        assert v1["state"] == "succeeded", v1
        root = pebble.root_pem()
        assert https_release(root, https_port) == v1["release"]
        plain = httpx.get(f"http://{ADDRESS}:{http_port}/x", headers={"Host": NAME})
        assert plain.status_code == 308
        assert plain.headers["location"] == f"https://{NAME}:{https_port}/x"

        # a renewal under paced load over HTTPS: served without one failed request
        first = served_serial(root, https_port)
        load = LoadGenerator(
            f"https://{ADDRESS}:{https_port}/", clients=2, rate=25, host=NAME, tls=_trust(root)
        )
        with load:
            load.wait_requests(20)
            wait_for(lambda: served_serial(root, https_port) != first, timeout=60, interval=0.5)
            load.wait_requests(40)
        result = load.result
        assert result.failures == 0, (result.errors[:5], result.statuses)
        assert set(result.statuses) == {200}, result.statuses

        # a name the CA cannot reach: the deployment fails saying why, nothing changes
        pebble.resolve("refused.example.com", "127.0.60.99")
        fleet.commit(
            "v2", ENVIRONMENTS.format(name="refused.example.com", directory=pebble.directory)
        )
        v2 = deployed(server, "shop", run_of(server, "shop"))
        assert v2["state"] == "failed", v2
        assert "refused the certificate for refused.example.com" in v2["reason"], v2["reason"]
        assert https_release(root, https_port) == v1["release"]
    finally:
        fleet.stop_everything()
        server.stop()
        server.http.close()
        pebble.stop()
