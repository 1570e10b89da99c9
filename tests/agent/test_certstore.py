"""The agent's certificate store: checked pairs become served files; a bad one keeps the
certificate already served, and says why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import trustme

from conveyor.agent.certstore import CertStore
from conveyor.protocol import TlsSpec
from conveyor.routespec import RouteSpec


def test_files_checked_served_and_kept_when_bad(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf = ca.issue_cert("shop.example.com")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    store = CertStore(tmp_path / "agent", 8443)
    tls = TlsSpec(cert_file=str(cert), key_file=str(key), redirect_http=False)
    spec = RouteSpec(app="shop", port=8080, domains=["shop.example.com"])

    served, error = store.with_tls(spec, tls, None)
    assert error is None and served is not None and served.tls is not None
    assert (served.tls.port, served.tls.redirect_http) == (8443, False)
    pem = Path(served.tls.pem)
    assert pem.stat().st_mode & 0o777 == 0o600
    assert store.with_tls(spec, tls, served)[0] == served  # same files, same spec

    # expired on the host: the served certificate stays, the error says where and why
    now = dt.datetime.now(dt.UTC)
    old = ca.issue_cert(
        "shop.example.com",
        not_before=now - dt.timedelta(days=9),
        not_after=now - dt.timedelta(days=1),
    )
    old.cert_chain_pems[0].write_to_path(str(cert))
    old.private_key_pem.write_to_path(str(key))
    kept, error = store.with_tls(spec, tls, served)
    assert kept == served
    assert error is not None and f"tls.cert {cert} expired on" in error
    # nothing served yet: nothing to route by name
    assert store.with_tls(spec, tls, None) == (None, error)

    # a key without its file
    missing = tls.model_copy(update={"key_file": str(tmp_path / "nope.key")})
    assert "cannot read it" in (store.with_tls(spec, missing, served)[1] or "")


def test_agent_refuses_one_port_for_http_and_https() -> None:
    from testbed.helpers import run_cli

    done = run_cli(
        "agent", "--server", "http://127.0.0.1:1", "--name", "x",
        "--http-port", "8443", "--https-port", "8443",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--http-port and --https-port are both 8443" in done.stderr + done.stdout


def test_secrets_checked_like_files(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf, other = ca.issue_cert("shop.example.com"), ca.issue_cert("shop.example.com")
    cert = leaf.cert_chain_pems[0].bytes().decode()
    store = CertStore(tmp_path / "agent", 443)
    spec = RouteSpec(app="shop", port=80, domains=["shop.example.com"])
    good = TlsSpec(cert_pem=cert, key_pem=leaf.private_key_pem.bytes().decode())
    served, error = store.with_tls(spec, good, None)
    assert error is None and served is not None and served.tls is not None
    assert Path(served.tls.pem).read_text().startswith("-----BEGIN CERTIFICATE-----")
    bad = good.model_copy(update={"key_pem": other.private_key_pem.bytes().decode()})
    kept, error = store.with_tls(spec, bad, served)
    assert kept == served
    assert error is not None and "the key of tls.key_secret is not the key of" in error
