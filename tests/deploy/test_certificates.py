"""The server's ACME certificates as stored: which one fits, and when it is due (pure)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import trustme

from conveyor.config.tls import Acme, Tls
from conveyor.deploy.certificates import (
    CERT_SECRET,
    Stored,
    due_in,
    lifetime_of,
    parse_stored,
    retry_in,
    stored_for,
)
from conveyor.deploy.desired import tls_spec
from conveyor.protocol import TlsSpec

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
DIRECTORY = "https://ca.test/dir"


def _stored(days: int = 90, names: tuple[str, ...] = ("shop.example.com",)) -> Stored:
    ca = trustme.CA()
    leaf = ca.issue_cert(
        *names, not_before=NOW - dt.timedelta(days=80), not_after=NOW + dt.timedelta(days=days)
    )
    return Stored(
        sorted(names),
        DIRECTORY,
        None,
        leaf.cert_chain_pems[0].bytes().decode(),
        leaf.private_key_pem.bytes().decode(),
    )


def test_stored_for_fits_only_its_domains_and_directory() -> None:
    stored = _stored()
    secrets = {CERT_SECRET: json.dumps(stored._asdict())}
    assert stored_for(secrets, ["shop.example.com"], DIRECTORY) == stored
    assert stored_for(secrets, ["www.example.com"], DIRECTORY) is None
    assert stored_for(secrets, ["shop.example.com"], "https://other.test/dir") is None
    assert stored_for({}, ["shop.example.com"], DIRECTORY) is None
    assert parse_stored("not json") is None
    assert parse_stored('{"domains": []}') is None


@pytest.mark.parametrize(
    ("days", "domains", "due"),
    [
        (90, ["shop.example.com"], False),  # 90 days left of 170: not yet
        (20, ["shop.example.com"], True),  # 20 of 100 left: less than a third
        (90, ["www.example.com"], True),  # does not cover the domain
    ],
)
def test_due_in(days: int, domains: list[str], due: bool) -> None:
    left = due_in(_stored(days), domains, NOW)
    assert (left == 0.0) is due, left


def test_nothing_stored_is_due_now() -> None:
    assert due_in(None, ["shop.example.com"], NOW) == 0.0


def test_a_later_server_renews_closer_to_the_expiry() -> None:
    stored = _stored(90)  # 170 days, renewed with 56.7 left: in 33.3 days
    first = due_in(stored, ["shop.example.com"], NOW)
    assert abs(first - 33.33 * 86400) < 3600, first
    assert due_in(stored, ["shop.example.com"], NOW, later=0.1) - first == pytest.approx(
        170 / 3 * 0.1 * 86400, rel=1e-3
    )


@pytest.mark.parametrize(
    ("failures", "lifetime", "wait"),
    [
        (1, 90 * 86400, 30.0),  # a 90-day certificate: 30 s after the first failure
        (2, 90 * 86400, 60.0),  # doubled with each failure in a row
        (5, 90 * 86400, 480.0),
        (8, 90 * 86400, 3600.0),  # at most an hour
        (400, 90 * 86400, 3600.0),  # no overflow however many
        (0, None, 30.0),  # unknown lifetime: the plain schedule
        (3, None, 120.0),
        (1, 30.0, 1.0),  # a 30-second one: a thirtieth of its life, never under a second
        (1, 600.0, 20.0),
        (9, 600.0, 20.0),
    ],
)
def test_retry_in(failures: int, lifetime: float | None, wait: float) -> None:
    assert retry_in(failures, lifetime) == wait


def test_lifetime_of_reads_the_leaf() -> None:
    assert lifetime_of(_stored(90)) == pytest.approx(170 * 86400, abs=2)
    assert lifetime_of(_stored()._replace(cert="garbage")) is None


def test_tls_spec_carries_the_servers_certificate() -> None:
    stored = _stored()
    secrets = {CERT_SECRET: json.dumps(stored._asdict())}
    tls = Tls(acme=Acme(directory=DIRECTORY))
    assert tls_spec(tls, True, secrets, ["shop.example.com"]) == TlsSpec(
        cert_pem=stored.cert, key_pem=stored.key, acme_directory=DIRECTORY
    )
    # other names: no certificate yet (the deployment orders one first)
    assert tls_spec(tls, True, secrets, ["www.example.com"]) == TlsSpec(acme_directory=DIRECTORY)
    # a failed renewal: the hosts keep the certificate and show why
    failed = json.dumps(stored._replace(error="ACME at … refused")._asdict())
    assert tls_spec(tls, True, {CERT_SECRET: failed}, ["shop.example.com"]) == TlsSpec(
        cert_pem=stored.cert,
        key_pem=stored.key,
        acme_directory=DIRECTORY,
        acme_error="ACME at … refused",
    )
