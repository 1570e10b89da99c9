"""The HAProxy route map of a shared port: entries in the order RouteTable selects in."""

from __future__ import annotations

import re

import pytest

from conveyor.agent.routing.haproxy_hosts import check_claims, route_entries, strip_lines
from conveyor.agent.routing.haproxy_state import AppState
from conveyor.agent.routing.spec import RouterError
from conveyor.hostroutes import RouteTable


def _app(name: str, domains: list[str], prefix: str = "", strip: bool = False) -> AppState:
    return AppState(
        app=name,
        bind="127.0.0.1",
        port=8080,
        slots=[],
        domains=domains,
        path_prefix=prefix,
        strip_prefix=strip,
    )


APPS = [
    _app("any", ["*"]),
    _app("wild", ["*.example.com"]),
    _app("deep", ["*.shop.example.com"]),
    _app("shop", ["shop.example.com"]),
    _app("api", ["shop.example.com"], "/api"),
    _app("v2", ["shop.example.com"], "/api/v2"),
]


def _first(entries: list[tuple[str, str]], key: str) -> str | None:
    # HAProxy's map_reg: the first entry whose regex matches, in file order
    return next((be for rx, be in entries if re.search(rx, key)), None)


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("shop.example.com", "/"),
        ("shop.example.com", "/api"),
        ("shop.example.com", "/api/x"),
        ("shop.example.com", "/apix"),
        ("shop.example.com", "/api/v2/y"),
        ("a.shop.example.com", "/"),
        ("a.b.example.com", "/"),
        ("example.com", "/"),
        ("other.org", "/api"),
        ("", "/"),
    ],
)
def test_the_map_selects_as_the_route_table(host: str, path: str) -> None:
    entries = route_entries(APPS, {a.app: a.app for a in APPS})
    table: RouteTable[str] = RouteTable()
    for a in APPS:
        table.add(a.app, a.domains, a.path_prefix, a.strip_prefix)
    picked = table.select(host.encode(), path.encode())
    assert _first(entries, host + path) == (picked.target if picked else None)


def test_a_name_claimed_twice_on_one_port_is_refused() -> None:
    apps = {a.app: a for a in APPS}
    with pytest.raises(RouterError, match="app api"):
        check_claims(_app("thief", ["shop.example.com"], "/api"), apps)
    check_claims(_app("fine", ["shop.example.com"], "/other"), apps)


def test_strip_rules_only_for_a_stripped_prefix() -> None:
    assert strip_lines(_app("a", ["a.example.com"], "/api", strip=True))[0].endswith("bytes(4)")
    assert strip_lines(_app("a", ["a.example.com"], "/api")) == []
