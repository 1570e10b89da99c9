"""HTTPS and ACME answers in HAProxy (issue 14 point 2, the HAProxy backend).

Apps with tls get a frontend per shared HTTPS (bind, port): `bind … ssl crt-list FILE`,
one crt-list line per app (its certificate file, then its names as SNI filters), the
same route map as plain HTTP (a map of its own, `fe_shared_…_PORT.routes`) and
`X-Forwarded-Proto: https`. HAProxy's copy of an app's certificate keeps one name,
`certs/<app>.pem`, so a renewed certificate is swapped through the Runtime API without a
reload (`set ssl cert` with the PEM, `commit ssl cert`: haproxy_certs.py), even when it
is the frontend's default one (which `del ssl crt-list` refuses to remove). An app
joining or leaving the HTTPS port reloads, as joining the HTTP port does. On the plain
shared port, ACME HTTP-01 answers come from a map (`maps/acme.challenges`) replaced
through the Runtime API, and an app with redirect_http gets a 308 to https.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from conveyor.agent.routing.haproxy_hosts import frontend_name, route_entries
from conveyor.agent.routing.haproxy_state import AppState
from conveyor.hostroutes import CATCH_ALL

ACME_PREFIX = "/.well-known/acme-challenge/"


def cert_digest(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:16]


def cert_file(certs: Path, app: str) -> Path:
    """HAProxy's copy of an app's certificate: one name for its life, so that the Runtime
    API can replace what it holds (even the frontend's default certificate)."""
    return certs / f"{app}.pem"


def crt_list_path(certs: Path, bind: str, port: int) -> Path:
    return certs / f"{frontend_name(bind, port)}.crtlist"


def crt_line(cert: Path, app: AppState) -> str:
    """One crt-list line: the file, ALPN, and the app's names as SNI filters."""
    filters = [d for d in app.domains if d != CATCH_ALL]
    return " ".join([str(cert), "[alpn http/1.1]", *filters])


def tls_groups(apps: Iterable[AppState]) -> dict[tuple[str, int], list[AppState]]:
    groups: dict[tuple[str, int], list[AppState]] = {}
    for app in sorted(apps, key=lambda a: a.app):
        if app.domains and app.tls_port and app.tls_cert:
            groups.setdefault((app.bind, app.tls_port), []).append(app)
    return groups


def tls_files(
    apps: Iterable[AppState], certs: Path, maps: Path, backend: Mapping[str, str]
) -> dict[Path, str]:
    """Every HTTPS port's crt-list and route map (the certificate files are already there)."""
    files: dict[Path, str] = {}
    for (bind, port), group in tls_groups(apps).items():
        lines = "".join(crt_line(cert_file(certs, a.app), a) + "\n" for a in group)
        files[crt_list_path(certs, bind, port)] = lines
        names = {a.app: backend[a.app] for a in group}
        entries = route_entries(group, names)
        files[maps / f"{frontend_name(bind, port)}.routes"] = "".join(
            f"{k} {v}\n" for k, v in entries
        )
    return files


def tls_frontend(bind: str, port: int, address: str, certs: Path, routes: Path) -> list[str]:
    return [
        f"frontend {frontend_name(bind, port)}",
        f"    bind {address} ssl crt-list {crt_list_path(certs, bind, port)}",
        "    http-request set-var(txn.t0) date(0,us)",
        "    http-request set-header X-Forwarded-Proto https",
        "    http-request set-var(txn.path) path",
        "    http-request set-var(txn.rk) req.hdr(host),lower,field(1,:),concat(,txn.path)",
        f"    http-request set-var(txn.be) var(txn.rk),map_reg({routes})",
        '    http-request return status 404 content-type "text/plain; charset=utf-8"'
        ' lf-string "no app on this host answers to %[req.hdr(host)]\\n"'
        " if !{ var(txn.be) -m found }",
        "    use_backend %[var(txn.be)]",
    ]


def acme_lines(challenges: Path) -> list[str]:
    """Rules of a plain shared frontend, before its route lookup: ACME answers for any
    name, then the redirects of apps with redirect_http (by backend, once looked up)."""
    return [
        f"    http-request set-var(txn.acme) path,field(4,/),map({challenges})"
        f" if {{ path_beg {ACME_PREFIX} }}",
        '    http-request return status 200 content-type "text/plain" lf-string'
        ' "%[var(txn.acme)]" if { var(txn.acme) -m found }',
        '    http-request return status 404 content-type "text/plain" string'
        f' "no such ACME challenge on this host" if {{ path_beg {ACME_PREFIX} }}',
    ]


def redirect_lines(apps: Iterable[AppState], backend: Mapping[str, str]) -> list[str]:
    out = []
    for app in sorted(apps, key=lambda a: a.app):
        if app.tls_port and app.tls_cert and app.redirect_http:
            port = "" if app.tls_port == 443 else f":{app.tls_port}"
            out.append(
                "    http-request redirect code 308 location"
                f" https://%[req.hdr(host),field(1,:)]{port}%[capture.req.uri]"
                f" if {{ var(txn.be) -m str {backend[app.app]} }}"
            )
    return out


__all__ = [
    "acme_lines",
    "cert_digest",
    "cert_file",
    "crt_line",
    "crt_list_path",
    "redirect_lines",
    "tls_files",
    "tls_frontend",
]
