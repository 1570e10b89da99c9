"""A service: one app on this host, its public listener, targets, balancer and clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from conveyor.flags import FlagSet
from conveyor.flags.header import RequestFlags
from conveyor.router.balancer import Balancer
from conveyor.router.target import Upstream

if TYPE_CHECKING:
    # Type-only cycle, on purpose: a service holds its client connections and each client
    # connection (and its exchange) reads its service; at run time neither imports the other.
    from conveyor.router.client import ClientConnection
    from conveyor.router.metrics import Counters, MetricsRegistry
    from conveyor.router.shared import SharedPort
    from conveyor.routespec import RouteSpec


class App:
    """One app: its spec, listener, targets and client connections."""

    def __init__(self, metrics: MetricsRegistry, spec: RouteSpec) -> None:
        self.metrics = metrics
        self.name = spec.app
        self.spec = spec
        self.server: asyncio.Server | None = None
        self.upstreams: dict[tuple[str, str, int], Upstream] = {}
        self.retired: set[Upstream] = set()
        self.balancer = Balancer([])
        self.connections: set[ClientConnection] = set()
        self.sticky = spec.sticky
        self.flags = _flags(spec, metrics)
        self.cookie_name = f"conveyor_release_{spec.app}"
        self._cookie_key = self.cookie_name.encode() + b"="
        self.removed = False
        self.drained: asyncio.Event | None = None
        self._counters: dict[str, Counters] = {}
        # the shared port serving it by its domains (None: its own listener, `server`)
        self.shared: SharedPort | None = None
        # the shared HTTPS port serving it too, when its spec has tls
        self.tls_shared: SharedPort | None = None

    def counters(self, release: str) -> Counters:
        counters = self._counters.get(release)
        if counters is None:
            counters = self._counters[release] = self.metrics.counters(self.name, release)
        return counters

    def cookie_header(self, release: str) -> bytes:
        return (
            f"Set-Cookie: {self.cookie_name}={release}; Path=/; HttpOnly; SameSite=Lax\r\n"
        ).encode()

    def cookie_release(self, cookie: bytes) -> str | None:
        key = self._cookie_key
        start = 0
        while True:
            i = cookie.find(key, start)
            if i < 0:
                return None
            if i == 0 or cookie[i - 1] in b" ;":
                end = cookie.find(b";", i)
                value = cookie[i + len(key) : end if end >= 0 else len(cookie)]
                return value.strip().decode("latin-1")
            start = i + 1

    def all_upstreams(self) -> Iterator[Upstream]:
        yield from self.upstreams.values()
        yield from self.retired

    def set_targets(self, spec: RouteSpec) -> None:
        """Swap in the targets of a new spec; in-flight requests keep their connections."""
        self.spec = spec
        self.sticky = spec.sticky
        self.flags = _flags(spec, self.metrics, self.flags)
        fresh: dict[tuple[str, str, int], Upstream] = {}
        for target in spec.targets:
            key = (target.release, target.host, target.port)
            up = self.upstreams.get(key)
            if up is None:
                # A target that comes back while draining keeps its connections.
                up = next((u for u in self.retired if _key(u) == key), None)
                if up is not None:
                    self.retired.discard(up)
                else:
                    up = Upstream(
                        target.release,
                        target.host,
                        target.port,
                        target.weight,
                        self.counters(target.release),
                    )
            up.weight = target.weight
            if target.weight > 0:
                up.activate()
            else:
                up.retire(spec.drain_timeout)
            fresh[key] = up
        for key, up in self.upstreams.items():
            if key not in fresh:
                up.retire(spec.drain_timeout)
                self.retired.add(up)
        self.upstreams = fresh
        self.balancer = Balancer(list(fresh.values()))

    def connection_lost(self, client: ClientConnection) -> None:
        self.connections.discard(client)
        if self.removed and not self.connections and self.drained is not None:
            self.drained.set()


def _key(up: Upstream) -> tuple[str, str, int]:
    return (up.release, up.host, up.port)


def _flags(
    spec: RouteSpec, metrics: MetricsRegistry, current: RequestFlags | None = None
) -> RequestFlags | None:
    """The flags to evaluate for each request (X-Conveyor-Flags), if the app asks for it;
    the answers of flags under a guarded rollout are counted (metrics.flag_counters).
    Unchanged flags (a spec that changes weights) keep their users' answers."""
    if spec.flags is None:
        return None
    if current is not None and current.source == spec.flags:
        return current
    app = spec.app
    return RequestFlags(
        spec.flags.stickiness,
        FlagSet(spec.flags.document),
        spec.flags.guarded,
        lambda answer: metrics.flag_counters(app, answer),
        source=spec.flags,
    )
