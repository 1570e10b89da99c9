"""Apps with domains in HAProxy: one frontend per shared (bind, port), a route map to backends.

Issue 14 point 1 for the HAProxy backend. The frontend builds a key from each request,
`<host without port><path>`, and looks it up in a `map_reg` map whose entries are in
the order `conveyor.hostroutes.RouteTable` selects in: exact names first, then the
longest `*.` wildcard, then `*`; within a name, the longest path prefix (whole
segments). A request no entry matches gets 404 from the frontend itself. An app's
backend strips its prefix when its spec says so. Pure rendering: the driver writes the
files and reloads, as it does whenever a listener changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from conveyor.agent.routing.haproxy_state import AppState
from conveyor.agent.routing.spec import RouterError
from conveyor.hostroutes import CATCH_ALL, Claim, claims, clashes


def shared_key(app: AppState) -> tuple[str, int]:
    return (app.bind, app.port)


def frontend_name(bind: str, port: int) -> str:
    return f"fe_shared_{bind.replace(':', '_').replace('.', '_')}_{port}"


def routes_map(maps: Path, bind: str, port: int) -> Path:
    return maps / f"{frontend_name(bind, port)}.routes"


def _literal(text: str) -> str:
    """`text` matched literally in a regular expression (map files take no quoting)."""
    return "".join(c if c.isalnum() or c in "/-_~" else "\\" + c for c in text)


def _pattern(domain: str, prefix: str) -> str:
    if domain == CATCH_ALL:
        host = "^[^/]*"
    elif domain.startswith("*."):
        host = "^[^/]+\\." + _literal(domain[2:])
    else:
        host = "^" + _literal(domain)
    return host + (_literal(prefix) + "(/|$)" if prefix else "/")


def _order(domain: str, prefix: str) -> tuple[int, int, int]:
    kind = 2 if domain == CATCH_ALL else 1 if domain.startswith("*.") else 0
    return (kind, -len(domain), -len(prefix))


def route_entries(apps: Iterable[AppState], backend: Mapping[str, str]) -> list[tuple[str, str]]:
    """(regex, backend name) in selection order, for the apps of one shared port."""
    rows = [(d, app.path_prefix, backend[app.app]) for app in apps for d in app.domains]
    rows.sort(key=lambda r: (*_order(r[0], r[1]), r[0], r[1]))
    return [(_pattern(d, p), be) for d, p, be in rows]


def shared_frontend(
    bind: str,
    port: int,
    address: str,
    routes: Path,
    before: Iterable[str] = (),
    after: Iterable[str] = (),
) -> list[str]:
    """`before` the route lookup, `after` it (with `txn.be` set): rules of TLS (haproxy_tls)."""
    return [
        f"frontend {frontend_name(bind, port)}",
        f"    bind {address}",
        "    http-request set-var(txn.t0) date(0,us)",
        *before,
        "    http-request set-var(txn.path) path",
        "    http-request set-var(txn.rk) req.hdr(host),lower,field(1,:),concat(,txn.path)",
        f"    http-request set-var(txn.be) var(txn.rk),map_reg({routes})",
        '    http-request return status 404 content-type "text/plain; charset=utf-8"'
        ' lf-string "no app on this host answers to %[req.hdr(host)]\\n"'
        " if !{ var(txn.be) -m found }",
        *after,
        "    use_backend %[var(txn.be)]",
    ]


def strip_lines(app: AppState) -> list[str]:
    """Backend rules relaying /prefix/x as /x (and /prefix as /), the query kept."""
    if not (app.domains and app.path_prefix and app.strip_prefix):
        return []
    n = len(app.path_prefix)
    return [
        f"    http-request set-var(txn.rest) path,bytes({n})",
        "    http-request set-path %[var(txn.rest)] if { var(txn.rest) -m beg / }",
        "    http-request set-path / if !{ var(txn.rest) -m beg / }",
    ]


def app_claims(app: AppState) -> list[Claim]:
    return claims(app.domains, app.path_prefix or None)


def check_claims(new: AppState, apps: Mapping[str, AppState]) -> None:
    """Refuse names (and prefix) another app already has on the same shared port."""
    others = {
        a.app: app_claims(a)
        for a in apps.values()
        if a.app != new.app and a.domains and shared_key(a) == shared_key(new)
    }
    clash = clashes(new.app, app_claims(new), others)
    if clash is not None:
        raise RouterError(clash)


def shares_port(app: str, bind: str, port: int, apps: Mapping[str, AppState]) -> bool:
    """Whether another app with domains already holds this shared listener."""
    return any(
        a.app != app and a.domains and (a.bind, a.port) == (bind, port) for a in apps.values()
    )
