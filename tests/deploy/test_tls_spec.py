"""What a host gets of `tls:`: file paths, the secrets' PEM values, or ACME's settings."""

from __future__ import annotations

from conveyor.config.tls import Acme, Tls
from conveyor.deploy.desired import tls_spec
from conveyor.protocol import TlsSpec


def test_tls_spec_per_source() -> None:
    secrets = {"CERT": "-----BEGIN CERTIFICATE-----", "KEY": "-----BEGIN PRIVATE KEY-----"}
    assert tls_spec(None, False, secrets) is None
    assert tls_spec(Tls(cert="/c.pem", key="/k.pem"), True, {}) == TlsSpec(
        cert_file="/c.pem", key_file="/k.pem", redirect_http=True
    )
    assert tls_spec(Tls(cert_secret="CERT", key_secret="KEY"), False, secrets) == TlsSpec(
        cert_pem=secrets["CERT"], key_pem=secrets["KEY"], redirect_http=False
    )
    acme = tls_spec(Tls(acme=Acme(directory="https://ca.test/dir", email="a@b.c")), True, {})
    assert acme == TlsSpec(acme_directory="https://ca.test/dir", acme_email="a@b.c")
