"""Targets as the proxy sees them: a pool of connections each, and the weighted choice."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.router.backend import BackendConnection
    from conveyor.router.metrics import Counters

# Most idle connections kept per target; more are closed when returned.
MAX_IDLE = 512
# How long a target that refused a connection is skipped by new requests.
DOWN_FOR = 1.0


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
        self.idle: list[BackendConnection] = []
        # Every open connection, idle or busy.
        self.conns: set[BackendConnection] = set()
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

    def take_idle(self) -> BackendConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put_idle(self, conn: BackendConnection) -> None:
        if not self.active or conn.closed or len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_ticks = 0
        self.idle.append(conn)

    def forget(self, conn: BackendConnection) -> None:
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


class Balancer:
    """Smooth weighted round-robin (nginx's) over the targets with weight > 0.

    Over any window of sum(weights) requests each target gets exactly its share, so
    a 10% canary sees 10% of the traffic even at a handful of requests per second.
    """

    __slots__ = ("_by_release", "_listed", "_turns", "current", "releases", "upstreams")

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = [u for u in upstreams if u.weight > 0]
        self.current = [0] * len(self.upstreams)
        self.releases = frozenset(u.release for u in self.upstreams)
        self._by_release: dict[str, Balancer] = {}
        # Every target of the spec per release, weight 0 included: what previews may reach.
        self._listed: dict[str, list[Upstream]] = {}
        for u in upstreams:
            self._listed.setdefault(u.release, []).append(u)
        self._turns: dict[str, int] = {}

    def pick(self, exclude: list[Upstream] | None = None) -> Upstream | None:
        """The next target; skips targets that just refused connections unless all did."""
        ups = self.upstreams
        n = len(ups)
        if n == 1 and exclude is None:
            return ups[0]
        cur = self.current
        best = -1
        total = 0
        for skip_down in (True, False):
            for i in range(n):
                u = ups[i]
                if (skip_down and u.down) or (exclude is not None and u in exclude):
                    continue
                cur[i] += u.weight
                total += u.weight
                if best < 0 or cur[i] > cur[best]:
                    best = i
            if best >= 0:
                break
        if best < 0:
            return None
        cur[best] -= total
        return ups[best]

    def pick_release(self, release: str) -> Upstream | None:
        """The next target of one release (sticky sessions), or None if it has no live one."""
        if release not in self.releases:
            return None
        sub = self._by_release.get(release)
        if sub is None:
            sub = self._by_release[release] = Balancer(
                [u for u in self.upstreams if u.release == release]
            )
        if all(u.down for u in sub.upstreams):
            return None
        return sub.pick()

    def pick_preview(self, release: str, exclude: list[Upstream] | None = None) -> Upstream | None:
        """The next target of `release` whatever its weight (a preview request), taking
        turns; None when the release has no target that is up and not in `exclude`."""
        listed = self._listed.get(release)
        if not listed:
            return None
        turn = self._turns.get(release, 0)
        n = len(listed)
        for i in range(n):
            u = listed[(turn + i) % n]
            if not u.down and (exclude is None or u not in exclude):
                self._turns[release] = (turn + i + 1) % n
                return u
        return None
