"""A target as the proxy sees it: one instance of a release, its pool of connections, its drain."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.router.metrics import Counters

# Most idle connections kept per target; more are closed when returned.
MAX_IDLE = 512
# How long a target that refused a connection is skipped by new requests.
DOWN_FOR = 1.0


class PooledConnection(Protocol):
    """What a target asks of its connections (backend.BackendConnection is one): the pool
    is typed by this, so that a target does not import the connections that import it."""

    closed: bool
    preview: bool
    idle_ticks: int

    def close(self) -> None: ...

    def drain_expired(self) -> None: ...


class Upstream:
    """One target (an instance of a release) with its pooled keep-alive connections."""

    __slots__ = (
        "active",
        "conns",
        "counters",
        "down",
        "down_until",
        "drain_handle",
        "host",
        "idle",
        "in_flight",
        "port",
        "release",
        "weight",
    )

    def __init__(
        self, release: str, host: str, port: int, weight: int, counters: Counters | None = None
    ) -> None:
        self.release = release
        self.host = host
        self.port = port
        self.weight = weight
        # Idle connections, most recently used last (LIFO: the least likely to be stale).
        self.idle: list[PooledConnection] = []
        # Every open connection, idle or busy.
        self.conns: set[PooledConnection] = set()
        self.in_flight = 0
        self.down = False
        self.down_until = 0.0
        # False once the target has weight 0 or left the spec: no new request, no pooling.
        self.active = True
        self.drain_handle: asyncio.TimerHandle | None = None
        # The counters of this target's release in its app.
        self.counters = counters

    def __repr__(self) -> str:
        return f"<Upstream {self.release} {self.host}:{self.port} w={self.weight}>"

    def take_idle(self) -> PooledConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put_idle(self, conn: PooledConnection) -> None:
        if not self.active or conn.closed or len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_ticks = 0
        self.idle.append(conn)

    def forget(self, conn: PooledConnection) -> None:
        """Called when a connection is lost."""
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def mark_down(self) -> None:
        self.down = True
        self.down_until = time.monotonic() + DOWN_FOR

    def activate(self) -> None:
        self.active = True
        if self.drain_handle is not None:
            self.drain_handle.cancel()
            self.drain_handle = None

    def retire(self, drain_timeout: float) -> None:
        """Take no new request; close idle connections; cut busy ones after drain_timeout."""
        self.active = False
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
        # Scheduled even with no connection open: one may be opening right now.
        if self.drain_handle is None:
            loop = asyncio.get_running_loop()
            self.drain_handle = loop.call_later(drain_timeout, self.drain_expired)

    def drain_expired(self) -> None:
        self.drain_handle = None
        if self.active:
            return
        for conn in list(self.conns):
            # A preview reaches a target out of rotation on purpose: the drain does not cut it.
            if not conn.preview:
                conn.drain_expired()
