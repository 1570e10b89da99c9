"""HTTPS for an app's domains through the whole system, certificates from files on the host.

Issue 14 point 2, with real processes: a server, an agent (`--http-port`,
`--https-port`) and its router (each backend). The app's conveyor.yml names a
certificate and key on the host (trustme): the deployment succeeds with its verify
check over HTTPS, the name is served with that certificate (checked against the CA),
plain HTTP is redirected. Then the files on the host are replaced by an expired
certificate: `conveyor status` says so and the previous certificate keeps serving; a
deployment fails with the same reason, nothing changed; a good certificate put back is
served again without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509

from testbed.fleet import Fleet
from tests.e2e.test_hosts import deployed, run_of
from tests.helpers import ServerProcess, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADDRESS = "127.0.60.2"
HOSTS = {"web-1": ADDRESS}
NAME = "shop.example.com"

ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1]
    domains: [shop.example.com]
    tls: {{cert: {cert}, key: {key}}}
    verify:
      - http: GET /healthz
"""


def _client(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https_release(ca: trustme.CA, port: int) -> str:
    with httpx.Client(verify=_client(ca), timeout=10) as client:
        r = client.get(
            f"https://{ADDRESS}:{port}/", headers={"Host": NAME}, extensions={"sni_hostname": NAME}
        )
    r.raise_for_status()
    return str(r.json()["release"])


def served_serial(ca: trustme.CA, port: int) -> int:
    with (
        socket.create_connection((ADDRESS, port), timeout=10) as raw,
        _client(ca).wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _write(leaf: trustme.LeafCert, cert: Path, key: Path) -> int:
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def status_errors(server: ServerProcess) -> str:
    return json.dumps(server.get("/api/status?app=shop"))


@pytest.mark.parametrize("router", ["embedded", "haproxy"])
def test_certificate_from_files_served_checked_and_kept(
    server: ServerProcess, tmp_path: Path, router: str
) -> None:
    if router == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    ca = trustme.CA()
    cert, key = tmp_path / "shop.pem", tmp_path / "shop.key"
    good = _write(ca.issue_cert(NAME), cert, key)
    http_port, https_port = free_port(ADDRESS), free_port(ADDRESS)
    fleet = Fleet(server, tmp_path, HOSTS, router=router, app="shop")
    fleet.agents["web-1"].args += ["--http-port", str(http_port), "--https-port", str(https_port)]
    environments = ENVIRONMENTS.format(cert=cert, key=key)
    try:
        fleet.start()
        fleet.commit("v1", environments)
        v1 = deployed(server, "shop", run_of(server, "shop"))
        assert v1["state"] == "succeeded", v1
        assert https_release(ca, https_port) == v1["release"]
        assert served_serial(ca, https_port) == good
        plain = httpx.get(f"http://{ADDRESS}:{http_port}/a?b=1", headers={"Host": NAME})
        assert plain.status_code == 308
        assert plain.headers["location"] == f"https://{NAME}:{https_port}/a?b=1"

        # an expired certificate put in place on the host: refused, the good one kept
        now = dt.datetime.now(dt.UTC)
        _write(
            ca.issue_cert(
                NAME, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
            ),
            cert,
            key,
        )
        wait_for(lambda: "certificate is kept" in status_errors(server), timeout=30)
        assert f"tls.cert {cert} expired on" in status_errors(server)
        shown = server.cli("status", "shop")
        assert shown.returncode == 0 and "expired on" in shown.stdout, shown.stdout
        assert served_serial(ca, https_port) == good
        assert https_release(ca, https_port) == v1["release"]

        # a deployment now fails with that reason and changes nothing
        fleet.commit("v2", environments)
        v2 = deployed(server, "shop", run_of(server, "shop"))
        assert v2["state"] == "failed", v2
        assert "expired on" in v2["reason"], v2["reason"]
        assert https_release(ca, https_port) == v1["release"]
        assert served_serial(ca, https_port) == good

        # a key of another certificate: named as such
        other = ca.issue_cert(NAME)
        _write(ca.issue_cert(NAME), cert, key)
        other.private_key_pem.write_to_path(str(key))
        wait_for(lambda: "is not the key of" in status_errors(server), timeout=30)

        # a good certificate back in place: served without a restart, the error gone
        renewed = _write(ca.issue_cert(NAME), cert, key)
        wait_for(lambda: served_serial(ca, https_port) == renewed, timeout=30)
        wait_for(lambda: "certificate is kept" not in status_errors(server), timeout=30)
        assert https_release(ca, https_port) == v1["release"]
    finally:
        fleet.stop_everything()
