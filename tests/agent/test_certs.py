"""The certificate checks the agent runs before a certificate reaches the router."""

from __future__ import annotations

import datetime as dt

import pytest
import trustme

from conveyor.certs import CertError, check_pair, covers, renewal_due, served_pem

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pair(cert: trustme.LeafCert) -> tuple[bytes, bytes]:
    return cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()


def test_a_good_pair_names_its_domains(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("shop.example.com", "*.shop.example.com")
    info = check_pair(*_pair(leaf), ["shop.example.com", "www.shop.example.com"], NOW)
    assert info.names == ("shop.example.com", "*.shop.example.com")
    assert info.fingerprint.startswith("sha256:") and len(info.fingerprint) == 71
    assert not renewal_due(info, NOW)
    assert renewal_due(info, info.not_after - dt.timedelta(seconds=info.lifetime() / 4))


@pytest.mark.parametrize(
    ("names", "domain", "expected"),
    [
        (("shop.example.com",), "shop.example.com", True),
        (("*.example.com",), "shop.example.com", True),
        (("*.example.com",), "a.shop.example.com", False),
        (("*.example.com",), "example.com", False),
        (("*.example.com",), "*.example.com", True),
        (("shop.example.com",), "*.example.com", False),
        (("shop.example.com",), "blog.example.com", False),
    ],
)
def test_covers(names: tuple[str, ...], domain: str, expected: bool) -> None:
    assert covers(names, domain) is expected


def test_bad_pairs_say_what_is_wrong(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("shop.example.com")
    other = ca.issue_cert("shop.example.com")
    cert, key = _pair(leaf)
    cases: list[tuple[bytes, bytes, list[str], dt.datetime, str]] = [
        (cert, other.private_key_pem.bytes(), ["shop.example.com"], NOW, "is not the key of"),
        (cert, key, ["shop.example.com"], dt.datetime(3001, 1, 1, tzinfo=dt.UTC), "expired on"),
        (
            cert,
            key,
            ["shop.example.com"],
            dt.datetime(1999, 1, 1, tzinfo=dt.UTC),
            "not valid before",
        ),
        (cert, key, ["blog.example.com"], NOW, "does not cover blog.example.com"),
        (b"", key, ["shop.example.com"], NOW, "holds no PEM certificate"),
        (key, key, ["shop.example.com"], NOW, "holds no PEM certificate"),
        (cert, cert, ["shop.example.com"], NOW, "holds no PEM private key"),
        (cert, b"", ["shop.example.com"], NOW, "holds no PEM private key"),
    ]
    for c, k, domains, now, says in cases:
        with pytest.raises(CertError, match=says):
            check_pair(c, k, domains, now, cert_from="/etc/ssl/x.pem", key_from="/etc/ssl/x.key")


def test_expired_certificate_from_trustme(ca: trustme.CA) -> None:
    old = ca.issue_cert(
        "shop.example.com",
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW - dt.timedelta(days=1),
    )
    with pytest.raises(CertError, match=r"/etc/ssl/x.pem expired on"):
        check_pair(*_pair(old), ["shop.example.com"], NOW, cert_from="/etc/ssl/x.pem")


def test_served_pem_is_chain_then_key(ca: trustme.CA) -> None:
    leaf = ca.issue_cert("shop.example.com")
    pem = served_pem(*_pair(leaf))
    assert pem.index(b"BEGIN CERTIFICATE") < pem.index(b"PRIVATE KEY")
