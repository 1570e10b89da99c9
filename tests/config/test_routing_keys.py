"""domains, path_prefix and strip_prefix: per service, per environment over it, checked."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, HostRouting, parse_config

TEXT = """\
app: shop
service:
  start: ./run
  port: 8000
  domains: [shop.example.com, www.shop.example.com]
environments:
  staging:
    hosts: [stage-1]
    domains: [staging.shop.example.com]
    path_prefix: /api/
    strip_prefix: true
  production:
    hosts: [web-1]
"""


def test_an_environment_routes_over_the_service() -> None:
    config = parse_config(TEXT)
    assert config.routing("staging") == HostRouting(("staging.shop.example.com",), "/api", True)
    assert config.routing("production") == HostRouting(
        ("shop.example.com", "www.shop.example.com"), "", False
    )
    assert config.routing(None) == config.routing("production")


def test_without_domains_the_app_keeps_its_own_port() -> None:
    config = parse_config(TEXT.replace("  domains: [shop.example.com, www.shop.example.com]\n", ""))
    assert config.routing("production") == HostRouting()


@pytest.mark.parametrize(
    ("edit", "where", "says"),
    [
        (("[shop.example.com,", "[Shop.Example.com,"), "service.domains[0]", "lowercase"),
        (("[shop.example.com,", "[shop.example.com:80,"), "service.domains[0]", "without port"),
        (("[shop.example.com,", "[bad_name!,"), "service.domains[0]", "not a valid host name"),
        (("[shop.example.com,", "[localhost,"), "service.domains[0]", "not a valid host name"),
        (
            ("www.shop.example.com]", "shop.example.com]"),
            "service.domains[1]",
            "listed twice",
        ),
        (("[staging.shop.example.com]", "[]"), "environments.staging.domains", "at least one"),
        (("path_prefix: /api/", "path_prefix: api"), "environments.staging.path_prefix", "/api"),
        (
            ("strip_prefix: true", "strip_prefix: yes please"),
            "environments.staging.strip_prefix",
            "true or false",
        ),
    ],
)
def test_bad_routing_is_refused_where_it_is(edit: tuple[str, str], where: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(TEXT.replace(*edit))
    (issue,) = caught.value.issues
    assert where in issue.path
    assert says in issue.message


def test_a_prefix_without_domains_is_refused() -> None:
    text = TEXT.replace("  domains: [shop.example.com, www.shop.example.com]\n", "").replace(
        "    domains: [staging.shop.example.com]\n", ""
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    (issue,) = caught.value.issues
    assert "environments.staging.path_prefix" in issue.path
    assert "expected domains:" in issue.message
