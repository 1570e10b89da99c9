"""Where verify checks reach an app: its own port, or the shared one by its name."""

from __future__ import annotations

from conveyor.config import parse_config
from conveyor.deploy.checks import reach
from conveyor.deploy.progress import HostView
from conveyor.protocol import ObservedState

TEXT = """\
app: shop
service:
  start: ./run
  port: 8000
environments:
  production:
    hosts: [web-1, web-2]
"""


def _views() -> dict[str, HostView]:
    return {
        "web-1": HostView(
            "web-1",
            True,
            1,
            ObservedState(host="web-1", generation=1, address="10.0.0.1", http_port=8080),
        ),
        "web-2": HostView("web-2", False, None, None),  # never reported: no URL
    }


def _reach(text: str) -> tuple[dict[str, str], str | None, dict[str, str]]:
    config = parse_config(text)
    assert config.service is not None
    got = reach(_views(), ["web-1", "web-2"], config.service, config.environments["production"])
    return got.urls, got.host_header, got.script_env()


def test_an_app_of_its_own_port_is_checked_there() -> None:
    assert _reach(TEXT) == (
        {"web-1": "http://10.0.0.1:8000"},
        None,
        {"CONVEYOR_URL": "http://10.0.0.1:8000", "CONVEYOR_URLS": "http://10.0.0.1:8000"},
    )


def test_an_app_with_domains_is_checked_on_the_shared_port_by_name() -> None:
    text = TEXT + "    domains: ['*.shop.example.com', shop.example.com]\n    path_prefix: /api\n"
    urls, header, env = _reach(text)
    assert urls == {"web-1": "http://10.0.0.1:8080/api"}
    assert header == "shop.example.com"
    assert env["CONVEYOR_HOST"] == "shop.example.com"


def test_a_wildcard_only_app_gets_a_name_it_covers() -> None:
    _, header, _ = _reach(TEXT + "    domains: ['*.shop.example.com']\n")
    assert header == "conveyor-verify.shop.example.com"
    _, header, _ = _reach(TEXT + "    domains: ['*']\n")
    assert header == "conveyor-verify.invalid"
