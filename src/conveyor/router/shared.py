"""The host's shared HTTP port: every app with domains on one listener, picked per request.

An app whose spec has domains is served here rather than on a port of its own; a
request's Host header and path choose the app (`conveyor.hostroutes.RouteTable`), and a
name no app claims gets 404. Apps without domains never touch this module: their
connections carry no table and their requests are not looked up.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from conveyor.hostroutes import Picked, RouteTable, clashes

if TYPE_CHECKING:
    # Types only, as in service.py: connections read their listener, it holds them.
    from conveyor.router.client import ClientConnection
    from conveyor.router.service import App
    from conveyor.router.tlsport import TlsNames
    from conveyor.routespec import RouteSpec


class SharedPort:
    """One shared listener (bind, port), its apps by name and its client connections."""

    def __init__(self, bind: str, port: int, tls: TlsNames | None = None) -> None:
        self.bind = bind
        self.port = port
        # HTTPS: the certificates by server name (tlsport.py); None: plain HTTP
        self.tls = tls
        self.proto = b"https" if tls is not None else b"http"
        # plain HTTP: the answers to ACME HTTP-01 challenges, token -> key authorization
        # (the router's one dict, shared by every plain shared port)
        self.challenges: dict[str, str] = {}
        self.name = f"shared port {bind}:{port}"
        self.server: asyncio.Server | None = None
        self.apps: dict[str, App] = {}
        self.table: RouteTable[App] = RouteTable()
        self.connections: set[ClientConnection] = set()
        self.removed = False
        self.drained: asyncio.Event | None = None
        self.drain_timeout = 30.0

    def clash(self, spec: RouteSpec) -> str | None:
        """Another app here already claims one of the spec's domain and prefix pairs."""
        others = {name: app.spec.claims() for name, app in self.apps.items()}
        return clashes(spec.app, spec.claims(), others)

    def rebuild(self) -> None:
        """A new table from the apps' specs, swapped in whole (requests in flight keep theirs)."""
        table: RouteTable[App] = RouteTable()
        for app in self.apps.values():
            spec = app.spec
            table.add(app, spec.domains, spec.path_prefix, spec.strip_prefix)
        self.table = table
        if self.tls is not None:
            self.tls.rebuild([a.spec for a in self.apps.values()])
        self.drain_timeout = max((a.spec.drain_timeout for a in self.apps.values()), default=0.0)

    def select(self, host: bytes | None, url: bytes) -> Picked[App] | None:
        return self.table.select(host, url)

    def connection_lost(self, client: ClientConnection) -> None:
        self.connections.discard(client)
        if self.removed and not self.connections and self.drained is not None:
            self.drained.set()
