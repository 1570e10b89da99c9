"""tls and redirect_http: the three sources, the shorthand, defaults and bad input."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, parse_config
from conveyor.config.tls import LETS_ENCRYPT, Acme, Tls

TEXT = """\
app: shop
service:
  start: ./run
  port: 8000
  domains: [shop.example.com]
  tls: acme
environments:
  staging:
    hosts: [stage-1]
    tls: {cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}
    redirect_http: false
  production:
    hosts: [web-1]
"""


def test_acme_shorthand_and_an_environment_over_the_service() -> None:
    config = parse_config(TEXT)
    production = config.routing("production")
    assert production.tls == Tls(acme=Acme(directory=LETS_ENCRYPT))
    assert production.redirect_http is True  # the default with tls
    staging = config.routing("staging")
    assert staging.tls == Tls(cert="/etc/ssl/shop.pem", key="/etc/ssl/shop.key")
    assert staging.redirect_http is False


def test_no_tls_no_redirect() -> None:
    text = TEXT.replace("  tls: acme\n", "")
    config = parse_config(
        text.replace("    tls: {cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}\n", "")
    )
    assert config.routing("production").tls is None
    assert config.routing("production").redirect_http is False


def test_secrets_and_acme_settings() -> None:
    text = TEXT.replace(
        "  tls: acme\n",
        "  tls: {acme: {directory: 'https://ca.test/dir', email: ops@example.com}}\n",
    ).replace(
        "{cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}",
        "{cert_secret: SHOP_CERT, key_secret: SHOP_KEY}",
    )
    config = parse_config(text)
    acme = config.routing("production").tls
    assert acme is not None and acme.acme == Acme(
        directory="https://ca.test/dir", email="ops@example.com"
    )
    assert config.routing("staging").tls == Tls(cert_secret="SHOP_CERT", key_secret="SHOP_KEY")


@pytest.mark.parametrize(
    ("edit", "where", "says"),
    [
        (("key: /etc/ssl/shop.key", "x: 1"), "environments.staging.tls", "x"),
        (
            ("{cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}", "{key: /etc/ssl/shop.key}"),
            "environments.staging.tls.key",
            "without cert",
        ),
        (
            ("{cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}", "{cert: /etc/ssl/shop.pem}"),
            "environments.staging.tls.cert",
            "without key",
        ),
        (("/etc/ssl/shop.pem,", "shop.pem,"), "environments.staging.tls.cert", "absolute path"),
        (("  tls: acme", "  tls: letsencrypt"), "service.tls", "expected 'acme'"),
        (("  tls: acme", "  tls: {}"), "service.tls", "expected cert and key"),
        (
            ("  tls: acme", "  tls: {acme: {}, cert_secret: A, key_secret: B}"),
            "service.tls",
            "several",
        ),
        (("[shop.example.com]", "['*.shop.example.com']"), "environments.production", "HTTP-01"),
        (("  domains: [shop.example.com]\n", ""), "environments.", "expected domains"),
    ],
)
def test_bad_tls_is_refused_where_it_is(edit: tuple[str, str], where: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(TEXT.replace(*edit))
    issue = caught.value.issues[0]
    assert where in issue.path, caught.value.issues
    assert says in issue.message, caught.value.issues
