"""The host's shared HTTPS port: SNI picks each app's certificate, swapped at run time.

An app whose spec has `tls` is served on the shared HTTPS port (its `tls.port`) beside
its shared HTTP port, by the same Host and path table. The listener's one
`ssl.SSLContext` has an `sni_callback` that hands each handshake the context of the
certificate for its server name (exact name, then the longest `*.` wildcard); a new
certificate is a new file in a new spec, loaded into a new context while the listener
stays open: handshakes in progress keep theirs, the next ones get the new one. A
handshake naming no app gets the first app's certificate (as HAProxy does), and its
requests then 404 unless their Host is served.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from conveyor.routespec import RouteSpec

__all__ = ["TlsNames", "load_context"]


def load_context(pem: str) -> ssl.SSLContext:
    """A server context for one certificate file (chain then key); OSError/SSLError if bad."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(pem)
    return context


class TlsNames:
    """Certificates by server name for one shared HTTPS listener."""

    def __init__(self) -> None:
        self.listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listener.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listener.set_alpn_protocols(["http/1.1"])
        self.listener.sni_callback = self._sni
        self._contexts: dict[str, ssl.SSLContext] = {}  # by pem path
        self._names: dict[str, ssl.SSLContext] = {}
        self._default: str | None = None

    def prepare(self, spec: RouteSpec) -> None:
        """Load the spec's certificate before anything changes (ApplyError-worthy if bad)."""
        assert spec.tls is not None
        if spec.tls.pem not in self._contexts:
            self._contexts[spec.tls.pem] = load_context(spec.tls.pem)

    def rebuild(self, specs: Iterable[RouteSpec]) -> None:
        """The names of the apps now on the port, each to its certificate's context."""
        names: dict[str, ssl.SSLContext] = {}
        used: set[str] = set()
        default = None
        for spec in specs:
            if spec.tls is None:
                continue
            self.prepare(spec)
            context = self._contexts[spec.tls.pem]
            used.add(spec.tls.pem)
            default = default or spec.tls.pem
            for domain in spec.domains:
                names[domain] = context
        self._names = names
        self._contexts = {pem: c for pem, c in self._contexts.items() if pem in used}
        if default is not None and default != self._default:
            # for clients that send no server name (or one no app has)
            self.listener.load_cert_chain(default)
            self._default = default

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        found = self._names.get(name)
        if found is not None:
            return found
        labels = name.split(".")
        for i in range(1, len(labels) - 1):
            found = self._names.get("*." + ".".join(labels[i:]))
            if found is not None:
                return found
        return self._names.get("*")

    def _sni(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        context = self.context_for(server_name)
        if context is not None:
            sock.context = context
