"""The embedded router's data plane: one listener per app, targets swapped atomically.

One file per domain type: `service.py` (an app: listener, targets, balancer, clients),
`target.py` (an instance and its connection pool), `balancer.py` (the weighted choice),
`client.py` (requests from clients), `request_head.py` (a request head as relayed),
`exchange.py` (one request relayed to a target) and `backend.py` (the pooled connections
to instances); this module owns the apps, applies specs and runs the periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any, cast

from conveyor.router.balancer import Balancer
from conveyor.router.client import ClientConnection
from conveyor.router.metrics import MetricsRegistry
from conveyor.router.service import App
from conveyor.router.shared import SharedPort
from conveyor.router.tlsport import TlsNames
from conveyor.routespec import RouteSpec

if TYPE_CHECKING:
    from conveyor.router.backend import BackendConnection

log = logging.getLogger("conveyor.router")

# How often idle connections, silent instances and down marks are looked at.
TICK = 0.25
# Idle pooled connections to instances are closed after this long (below the keep-alive
# timeout of common servers, so that the pool rarely holds a connection about to close).
POOL_IDLE_TIMEOUT = 2.0
# A TLS client that has not finished its handshake by then is cut.
HANDSHAKE_TIMEOUT = 10.0


class ApplyError(Exception):
    """A spec that cannot be applied; `status` is the HTTP status the admin API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bind(bind: str, port: int, reuse_port: bool = False) -> socket.socket:
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ApplyError(400, f"cannot listen on {bind}:{port}: {exc}") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Several worker processes listen on the same port; the kernel spreads clients.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        status = 409 if exc.errno == errno.EADDRINUSE else 400
        raise ApplyError(status, f"cannot listen on {bind}:{port}: {exc}") from exc
    sock.setblocking(False)
    return sock


class Proxy:
    """All apps of this host; `apply` and `remove` are what the admin API calls."""

    def __init__(
        self,
        *,
        backend_timeout: float = 60.0,
        client_timeout: float = 60.0,
        reuse_port: bool = False,
    ) -> None:
        self.backend_timeout = backend_timeout
        self.reuse_port = reuse_port
        self.client_timeout = client_timeout
        self.metrics = MetricsRegistry(started_at=time.time())
        self.apps: dict[str, App] = {}
        self.draining: set[App] = set()
        # apps with domains, on the shared listener of their (bind, port)
        self.shared: dict[tuple[str, int], SharedPort] = {}
        self.shared_draining: set[SharedPort] = set()
        # ACME HTTP-01 answers, served on every plain shared port (admin PUT /challenges)
        self.challenges: dict[str, str] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def specs(self) -> dict[str, RouteSpec]:
        return {name: app.spec for name, app in self.apps.items()}

    async def apply(self, spec: RouteSpec) -> None:
        async with self._lock:
            await self._apply(spec)

    async def _apply(self, spec: RouteSpec) -> None:
        seen: set[tuple[str, int]] = set()
        for target in spec.targets:
            if (target.host, target.port) in seen:
                raise ApplyError(400, f"target {target.host}:{target.port} is listed twice")
            seen.add((target.host, target.port))
        for other in self.apps.values():
            if other.name != spec.app and other.spec.port == spec.port:
                if spec.domains and other.spec.domains:
                    continue  # both on the shared port: told apart by their domains
                raise ApplyError(409, f"port {spec.port} is already used by app {other.name}")
        if spec.domains:
            await self._apply_shared(spec)
            return
        app = self.apps.get(spec.app)
        old_server = None
        if app is not None and app.shared is not None:
            self._leave_shared(app)  # domains dropped: back to a port of its own
        if (
            app is None
            or app.server is None
            or (app.spec.port, app.spec.bind)
            != (
                spec.port,
                spec.bind,
            )
        ):
            sock = _bind(spec.bind, spec.port, self.reuse_port)
            new_app = app or App(self.metrics, spec)
            loop = asyncio.get_running_loop()
            try:
                server = await loop.create_server(
                    lambda: ClientConnection(new_app), sock=sock, backlog=1024
                )
            except OSError as exc:
                sock.close()
                raise ApplyError(409, f"cannot listen on {spec.bind}:{spec.port}: {exc}") from exc
            if app is None:
                app = self.apps[spec.app] = new_app
            old_server, app.server = app.server, server
        app.set_targets(spec)
        if old_server is not None:
            old_server.close()
        log.info(
            "app applied",
            extra={
                "app": spec.app,
                "listen": f"{spec.bind}:{spec.port}",
                "targets": [f"{t.release}@{t.host}:{t.port}={t.weight}" for t in spec.targets],
                "sticky": spec.sticky,
            },
        )

    async def _apply_shared(self, spec: RouteSpec) -> None:
        """An app with domains: on the shared listener of (bind, port), opened if needed."""
        shared = self.shared.get((spec.bind, spec.port))
        if shared is not None:
            clash = shared.clash(spec)
            if clash is not None:
                raise ApplyError(409, clash)
        tls_shared = None
        if spec.tls is not None:
            tls_shared = await self._tls_port(spec)
        if shared is None:
            shared = await self._open_shared(spec.bind, spec.port, None)
            shared.challenges = self.challenges
        app = self.apps.get(spec.app)
        if app is None:
            app = self.apps[spec.app] = App(self.metrics, spec)
        elif app.shared is not shared:
            if app.shared is not None:
                self._leave_shared(app)
            if app.server is not None:
                # from its own port to the shared one: its own listener closes, its
                # connections finish what they are doing
                app.server.close()
                app.server = None
        app.set_targets(spec)
        app.shared = shared
        shared.apps[spec.app] = app
        shared.rebuild()
        if app.tls_shared is not None and app.tls_shared is not tls_shared:
            old, app.tls_shared = app.tls_shared, None
            self._leave_port(app, old)
        if tls_shared is not None:
            app.tls_shared = tls_shared
            tls_shared.apps[spec.app] = app
            tls_shared.rebuild()
        log.info(
            "app applied",
            extra={
                "app": spec.app,
                "listen": f"{spec.bind}:{spec.port}",
                "domains": spec.domains,
                "path_prefix": spec.path_prefix,
                "tls": None if spec.tls is None else f"{spec.tls.port} {spec.tls.pem}",
                "targets": [f"{t.release}@{t.host}:{t.port}={t.weight}" for t in spec.targets],
                "sticky": spec.sticky,
            },
        )

    def _leave_shared(self, app: App) -> None:
        """Take an app off its shared ports; the last one to leave closes a listener."""
        shared, tls_shared = app.shared, app.tls_shared
        app.shared = app.tls_shared = None
        for port in (shared, tls_shared):
            if port is not None:
                self._leave_port(app, port)

    def _leave_port(self, app: App, shared: SharedPort) -> None:
        shared.apps.pop(app.name, None)
        shared.rebuild()
        if shared.apps:
            return
        self.shared.pop((shared.bind, shared.port), None)
        shared.removed = True
        if shared.server is not None:
            shared.server.close()
        for client in list(shared.connections):
            if client.current is None:
                client.close()
            else:
                client.closing = True
        if shared.connections:
            shared.drained = asyncio.Event()
            self.shared_draining.add(shared)
            self._spawn(self._drain_shared(shared, app.spec.drain_timeout))

    async def _drain_shared(self, shared: SharedPort, timeout: float) -> None:
        assert shared.drained is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await shared.drained.wait()
        for client in list(shared.connections):
            client.abort()
        self.shared_draining.discard(shared)

    async def _tls_port(self, spec: RouteSpec) -> SharedPort:
        """The shared HTTPS port of the spec, opened if needed, its certificate loaded (or
        ApplyError: nothing changed)."""
        assert spec.tls is not None
        key = (spec.bind, spec.tls.port)
        shared = self.shared.get(key)
        if shared is not None and shared.tls is None:
            raise ApplyError(409, f"port {spec.tls.port} is the shared HTTP port, not HTTPS")
        if shared is not None:
            clash = shared.clash(spec)
            if clash is not None:
                raise ApplyError(409, clash)
        names = shared.tls if shared is not None else TlsNames()
        assert names is not None
        try:
            names.prepare(spec)
        except (OSError, ssl.SSLError) as exc:
            raise ApplyError(400, f"cannot load the certificate {spec.tls.pem}: {exc}") from exc
        if shared is None:
            shared = await self._open_shared(spec.bind, spec.tls.port, names)
        return shared

    async def _open_shared(self, bind: str, port: int, tls: TlsNames | None) -> SharedPort:
        shared = SharedPort(bind, port, tls)
        sock = _bind(bind, port, self.reuse_port)
        home = shared
        try:
            shared.server = await asyncio.get_running_loop().create_server(
                lambda: ClientConnection(home),
                sock=sock,
                backlog=1024,
                ssl=None if tls is None else tls.listener,
                ssl_handshake_timeout=None if tls is None else HANDSHAKE_TIMEOUT,
            )
        except OSError as exc:
            sock.close()
            raise ApplyError(409, f"cannot listen on {bind}:{port}: {exc}") from exc
        self.shared[(bind, port)] = shared
        return shared

    async def set_challenges(self, bind: str, port: int, answers: dict[str, str]) -> None:
        """The ACME HTTP-01 answers every plain shared port gives (token -> key authorization);
        (bind, port) is opened if no app with domains has it yet (it answers 404 but these)."""
        async with self._lock:
            if (bind, port) not in self.shared:
                shared = await self._open_shared(bind, port, None)
                shared.challenges = self.challenges
            self.challenges.clear()
            self.challenges.update(answers)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def remove(self, name: str) -> bool:
        """Stop accepting connections for an app; in-flight requests finish (up to its drain)."""
        async with self._lock:
            app = self.apps.pop(name, None)
            if app is not None and app.shared is not None:
                # requests in flight keep their app; new ones for its names get 404
                self._leave_shared(app)
                app.removed = True
                for up in list(app.upstreams.values()):
                    up.retire(app.spec.drain_timeout)
                    app.retired.add(up)
                app.upstreams = {}
                app.balancer = Balancer([])
                # its targets' pools are still swept until the last of them is gone
                self.draining.add(app)
                log.info("app removed", extra={"app": name})
                return True
        if app is None:
            return False
        app.removed = True
        if app.server is not None:
            app.server.close()
        for up in list(app.upstreams.values()):
            up.retire(app.spec.drain_timeout)
            app.retired.add(up)
        app.upstreams = {}
        app.balancer = Balancer([])
        for client in list(app.connections):
            if client.current is None:
                client.close()
            else:
                client.closing = True
        log.info("app removed", extra={"app": name})
        if app.connections:
            app.drained = asyncio.Event()
            self.draining.add(app)
            task = asyncio.get_running_loop().create_task(self._drain(app))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _drain(self, app: App) -> None:
        assert app.drained is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(app.spec.drain_timeout):
                await app.drained.wait()
        for client in list(app.connections):
            client.abort()
        self.draining.discard(app)

    async def shutdown(self, grace: float) -> None:
        """Stop every listener, let in-flight requests finish (up to `grace`), then cut."""
        for name in list(self.apps):
            app = self.apps[name]
            app.spec = app.spec.model_copy(
                update={"drain_timeout": min(grace, app.spec.drain_timeout)}
            )
            await self.remove(name)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace + 1)
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _all_apps(self) -> Iterator[App]:
        yield from self.apps.values()
        yield from self.draining

    def _all_listeners(self) -> Iterator[App | SharedPort]:
        yield from self._all_apps()
        yield from self.shared.values()
        yield from self.shared_draining

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._sweep_once()
            except Exception:
                log.exception("sweep failed")

    def _sweep_once(self) -> None:
        now = time.monotonic()
        for listener in list(self._all_listeners()):
            self._sweep_clients(listener)
        for app in list(self._all_apps()):
            self._sweep_targets(app, now)
            if app.shared is None and app.removed and not app.retired and not app.connections:
                # an app that was on a shared port: done once its targets are gone
                self.draining.discard(app)

    def _sweep_clients(self, app: App | SharedPort) -> None:
        """Close idle clients; cut those that stopped reading a response or sending a body."""
        client_ticks = self.client_timeout / TICK
        for client in list(app.connections):
            ex = client.current
            if ex is None:
                client.idle_ticks += 1
                if client.idle_ticks > client_ticks:
                    client.close()
            elif client.write_paused or (
                not ex.req_done and client.reading and client.tunnel is None
            ):
                # A client that stopped reading its response, or sending its body.
                client.idle_ticks += 1
                if client.idle_ticks > client_ticks:
                    client.abort()

    def _sweep_targets(self, app: App, now: float) -> None:
        """Lift expired down marks, close idle pooled connections, time out silent instances
        and forget retired targets once their last connection is gone."""
        backend_ticks = self.backend_timeout / TICK
        pool_ticks = POOL_IDLE_TIMEOUT / TICK
        for up in list(app.all_upstreams()):
            if up.down and now >= up.down_until:
                up.down = False
            for conn in list(cast("set[BackendConnection]", up.conns)):
                ex = conn.exchange
                if ex is None:
                    conn.idle_ticks += 1
                    if conn.idle_ticks > pool_ticks:
                        conn.close()
                elif not conn.tunnel and not conn.read_paused and ex.req_done:
                    conn.idle_ticks += 1
                    if conn.idle_ticks > backend_ticks:
                        conn.time_out()
            if not up.active and not up.conns:
                app.retired.discard(up)
