"""TLS between agents, the CLI and the server, with certificates made in the test (trustme);
and the proxy headers a reverse proxy in front of the server sends."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.fleet import AgentProcess, Fleet
from tests.helpers import ServerProcess, run_cli, wait_for

# the server, on this test's own loopback addresses; agents' routers beside it
SERVER_HOST = "127.0.45.1"
PROXY = "127.0.45.2"  # the reverse proxy the server trusts
STRANGER = "127.0.45.3"  # anyone else
ONE_HOST = {"tls-1": "127.0.45.11"}

ENVIRONMENTS = """
environments:
  production:
    hosts: [tls-1]
"""


class Certificates:
    """A CA, the server's certificate (for SERVER_HOST) signed by it, and another CA."""

    def __init__(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert(SERVER_HOST, "localhost")
        self.cert = where / "server.pem"
        self.key = where / "server.key"
        self.ca = where / "ca.pem"
        self.other_ca = where / "other-ca.pem"
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))
        ca.cert_pem.write_to_path(str(self.ca))
        trustme.CA().cert_pem.write_to_path(str(self.other_ca))
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        self.fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(tmp_path: Path, certs: Certificates) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path / "data",
        host=SERVER_HOST,
        args=("--tls-cert", str(certs.cert), "--tls-key", str(certs.key)),
        ca=certs.ca,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.http.close()


def agent_with(server: ServerProcess, tmp: Path, name: str, *args: str) -> AgentProcess:
    agent = AgentProcess(server, name, tmp / name, address="127.0.45.21")
    agent.args = list(args)
    return agent


def exited(agent: AgentProcess) -> int:
    """The exit code of an agent that stops by itself."""
    proc = agent.proc
    assert proc is not None
    wait_for(lambda: proc.poll() is not None, timeout=60)
    return int(proc.returncode)


@pytest.mark.slow
def test_an_agent_with_the_ca_enrols_and_deploys_a_release_over_tls(
    tls_server: ServerProcess, certs: Certificates, tmp_path: Path
) -> None:
    server = tls_server
    assert server.url.startswith("https://")
    # the server says its certificate's fingerprint at start, and `host add` repeats it
    assert certs.fingerprint in server.log()
    fleet = Fleet(server, tmp_path, ONE_HOST)
    fleet.agents["tls-1"].args = ["--ca", str(certs.ca)]
    try:
        fleet.start()
        added = server.cli("host", "add", "tls-2")
        assert added.returncode == 0, added.stderr
        assert f"--server-fingerprint {certs.fingerprint}" in added.stdout
        assert f"--server {server.url}" in added.stdout

        # a signed GitHub webhook over https starts the run
        sha = fleet.commit("v1", ENVIRONMENTS)
        secret = server.get("/api/apps/sample/webhook")["webhook_secret"]
        body = json.dumps({"ref": "refs/heads/main", "after": sha, "pusher": {"name": "ada"}})
        signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        hook = server.http.post(
            "/hooks/github/sample",
            content=body,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": f"sha256={signature}",
                "Content-Type": "application/json",
            },
        )
        assert hook.status_code in (200, 202), hook.text
        run = wait_for(lambda: server.get("/api/runs", params={"app": "sample"}), timeout=30)[0]

        def deployed() -> object:
            found = [d for d in server.get("/api/deployments?app=sample") if d["run"] == run["id"]]
            done = found and found[0]["state"] not in ("queued", "waiting", "running")
            return found[0] if done else None

        deployment = wait_for(deployed, timeout=120, interval=0.3)
        assert deployment["state"] == "succeeded", deployment
        release = server.get(f"/api/runs/{run['id']}")["release"]
        assert fleet.serving("tls-1") == release  # the artifact came down over TLS

        # the CLI trusts the CA given by CONVEYOR_CA (ServerProcess.cli sets it)
        status = server.cli("status", "sample")
        assert status.returncode == 0 and release in status.stdout, status.stderr
        # the dashboard over https: its login sets a Secure cookie
        login = server.http.post("/login", data={"token": server.token, "next": "/"})
        assert login.status_code == 303 and "secure" in login.headers["set-cookie"].lower()
    finally:
        fleet.stop_everything()


def test_an_agent_whose_ca_did_not_sign_the_server_certificate_refuses_it(
    tls_server: ServerProcess, certs: Certificates, tmp_path: Path
) -> None:
    agent = agent_with(tls_server, tmp_path, "stranger", "--ca", str(certs.other_ca))
    agent.launch()
    assert exited(agent) == 2
    log = agent.log()
    assert "not signed by the CA in --ca" in log and str(certs.other_ca) in log, log
    assert '"enrolment failed"' in log and "Traceback" not in log
    host = tls_server.get("/api/hosts/stranger")
    assert host["state"] == "pending" and not host["online"]  # its token was never used


def test_a_wrong_fingerprint_is_refused_and_the_right_one_is_trusted(
    tls_server: ServerProcess, certs: Certificates, tmp_path: Path
) -> None:
    wrong = "sha256:" + "ab" * 32
    agent = agent_with(tls_server, tmp_path, "pinned", "--server-fingerprint", wrong)
    agent.launch()
    assert exited(agent) == 2
    log = agent.log()
    assert f"is {certs.fingerprint}, not {wrong}" in log, log
    assert tls_server.get("/api/hosts/pinned")["state"] == "pending"

    # the fingerprint as openssl prints it (upper case, colons) pins the right certificate
    hexdigest = certs.fingerprint.removeprefix("sha256:").upper()
    openssl_style = "SHA256:" + ":".join(re.findall("..", hexdigest))
    agent.args = ["--server-fingerprint", openssl_style]
    try:
        agent.start()
        assert tls_server.get("/api/hosts/pinned")["state"] == "enrolled"

        # enrolled, then pinned to another certificate: it keeps running, refusing the server
        agent.stop()
        agent.args = ["--server-fingerprint", wrong]
        agent.launch()
        wait_for(lambda: "TLS with the server failed" in agent.log(), timeout=30)
        assert agent.proc is not None and agent.proc.poll() is None
        assert f"is {certs.fingerprint}, not {wrong}" in agent.log().split("agent started")[-1]
    finally:
        agent.stop_everything()


def test_the_cli_without_the_ca_fails_with_a_clear_message(
    tls_server: ServerProcess, certs: Certificates
) -> None:
    env = {"CONVEYOR_SERVER": tls_server.url, "CONVEYOR_TOKEN": tls_server.token}
    done = run_cli("status", env={**_clean_env(), **env, "COLUMNS": "200"})
    assert done.returncode == 1
    assert "certificate is not trusted" in done.stderr and "--ca FILE" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # --ca on the command line (ServerProcess.cli passes CONVEYOR_CA instead)
    listed = run_cli("host", "list", "--ca", str(certs.ca), env={**_clean_env(), **env})
    assert listed.returncode == 0, listed.stderr
    # and an agent's --ca with a plain http:// URL is refused: it would protect nothing
    plain = run_cli(
        "agent",
        "--server",
        "http://127.0.45.1:9",
        "--name",
        "x",
        "--ca",
        str(certs.ca),
        env=_clean_env(),
    )
    assert plain.returncode == 2 and "not https://" in plain.stderr, plain.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing cert", "--tls-cert {missing}: cannot read it (No such file or directory)"),
        ("unreadable key", "--tls-key {dir}: cannot read it (Is a directory)"),
        ("key of another cert", "--tls-key {other_key} does not match the certificate"),
        ("not a certificate", "--tls-cert {key}: no PEM certificate in it"),
    ],
)
def test_a_bad_certificate_or_key_stops_the_server_at_start(
    case: str, message: str, certs: Certificates, tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    paths = {
        "missing": tmp_path / "missing.pem",
        "dir": tmp_path,
        "other_key": other_key,
        "key": certs.key,
    }
    cert, key = {
        "missing cert": (paths["missing"], certs.key),
        "unreadable key": (certs.cert, tmp_path),
        "key of another cert": (certs.cert, other_key),
        "not a certificate": (certs.key, certs.key),
    }[case]
    done = run_cli(
        "server",
        "--data",
        str(tmp_path / "data"),
        "--listen",
        f"{SERVER_HOST}:9",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    flat = " ".join(done.stderr.split())
    assert message.format(**paths) in flat, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before it touched anything


def test_proxy_headers_count_only_from_an_allowed_proxy(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data", host=SERVER_HOST, args=("--forwarded-allow-ips", PROXY)
    ).start()
    try:
        headers = {
            "Authorization": f"Bearer {server.token}",
            "Host": "ci.example.com",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "203.0.113.9",
        }

        def client(source: str) -> httpx.Client:
            transport = httpx.HTTPTransport(local_address=source)
            return httpx.Client(base_url=server.url, transport=transport, headers=headers)

        with client(PROXY) as proxy, client(STRANGER) as stranger:
            via_proxy = proxy.post("/api/apps", json={"name": "shop", "repo": "/nowhere"})
            assert via_proxy.status_code == 201, via_proxy.text
            assert (
                via_proxy.json()["webhooks"]["github"] == "https://ci.example.com/hooks/github/shop"
            )
            direct = stranger.get("/api/apps/shop/webhook")
            assert direct.json()["webhooks"]["github"] == "http://ci.example.com/hooks/github/shop"
            # the dashboard's session cookie is Secure when the proxy says https
            login = {"token": server.token, "next": "/"}
            assert "secure" in proxy.post("/login", data=login).headers["set-cookie"].lower()
            assert "secure" not in stranger.post("/login", data=login).headers["set-cookie"].lower()
    finally:
        server.stop()
        server.http.close()
