"""One request and its response through the proxy: choice of target, retries, accounting."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from conveyor.flags.header import NO_OBSERVERS, Observer
from conveyor.router.backend import BackendConnection

if TYPE_CHECKING:
    # Type-only cycle, on purpose: a client connection creates its exchanges and each
    # exchange writes the response back to it (and reads its service); at run time only
    # client imports this module.
    from conveyor.router.client import ClientConnection
    from conveyor.router.metrics import Counters
    from conveyor.router.service import App
    from conveyor.router.target import Upstream

log = logging.getLogger("conveyor.router")

CONNECT_TIMEOUT = 5.0
# Request bytes kept to replay an idempotent request after the stale-connection race.
REPLAY_MAX = 64 * 1024
# Request bytes buffered while no backend connection is ready, before the client is paused.
PENDING_MAX = 64 * 1024

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

_REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def error_response(status: int, message: str, keep_alive: bool) -> bytes:
    body = message.encode() + b"\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n" % (
        status,
        _REASONS.get(status, b"Error"),
    ) + b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
        len(body),
        b"keep-alive" if keep_alive else b"close",
        body,
    )


class Exchange:
    """A request from a client, relayed to one target (or retried on another)."""

    __slots__ = (
        "app",
        "backend",
        "chunked",
        "client",
        "connect_task",
        "cookie_release",
        "counters",
        "finished",
        "flagged",
        "head",
        "head_request",
        "http10",
        "idempotent",
        "keep_alive",
        "pending",
        "pending_size",
        "preview",
        "req_done",
        "retried",
        "sent",
        "sent_size",
        "set_cookie",
        "start",
        "tried",
        "tunneling",
        "upgrade",
        "upstream",
    )

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        head: bytes,
        keep_alive: bool,
        http10: bool,
        upgrade: bool,
        chunked: bool,
        has_body: bool,
        cookie_release: str | None,
        preview: str | None = None,
    ) -> None:
        self.client = client
        self.app: App = client.app
        self.head = head
        self.idempotent = method in _IDEMPOTENT
        self.head_request = method == b"HEAD"
        self.keep_alive = keep_alive
        self.http10 = http10
        self.upgrade = upgrade
        self.chunked = chunked
        self.req_done = not has_body
        self.cookie_release = cookie_release
        # The release named in PREVIEW_HEADER: only it may answer, whatever its weight.
        self.preview = preview
        self.set_cookie = b""
        # Frames not yet sent (no backend connection yet); None once streaming directly.
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        # Frames sent, for a replay; None when the request cannot be replayed.
        self.sent: list[bytes] | None = None
        self.sent_size = 0
        self.upstream: Upstream | None = None
        self.counters: Counters | None = None
        # the counters of this request's guarded flags' answers (flags.header.RequestFlags)
        self.flagged: tuple[Observer, ...] = NO_OBSERVERS
        self.backend: BackendConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.tried: list[Upstream] | None = None
        self.retried = False
        self.finished = False
        self.tunneling = False
        self.start = time.monotonic()

    # -- choosing a target -------------------------------------------------

    def begin(self) -> None:
        app = self.app
        balancer = app.balancer
        if self.preview is not None:
            # A verification must not pass by reaching another release: no fallback, no cookie.
            up = balancer.pick_preview(self.preview)
            if up is None:
                self.fail(503, f"release {self.preview} is not available on this host")
            else:
                self._use(up)
            return
        up = None
        if app.sticky and self.cookie_release is not None:
            up = balancer.pick_release(self.cookie_release)
        if up is None:
            up = balancer.pick()
            if up is None:
                self.fail(503, f"app {app.name} has no instance taking traffic")
                return
            if app.sticky:
                self.set_cookie = app.cookie_header(up.release)
        self._use(up)

    def _use(self, up: Upstream) -> None:
        if self.upstream is not up:
            if self.counters is not None:
                self.counters.in_flight -= 1
            self.upstream = up
            counters = up.counters
            if counters is None:
                counters = up.counters = self.app.counters(up.release)
            self.counters = counters
            counters.in_flight += 1
        # the pool holds this module's connections only (target.py types it by a protocol)
        conn = cast("BackendConnection | None", up.take_idle())
        if conn is not None:
            self._send(conn)
        else:
            self._connect(up)

    def _connect(self, up: Upstream) -> None:
        self.connect_task = asyncio.get_running_loop().create_task(self._open(up))

    async def _open(self, up: Upstream) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await loop.create_connection(
                    lambda: BackendConnection(up, preview=self.preview is not None),
                    up.host,
                    up.port,
                )
        except Exception as exc:  # OSError, TimeoutError, or anything else: not connected
            self.connect_task = None
            if not self.finished:
                self._connect_failed(up, exc)
            return
        self.connect_task = None
        if self.finished:
            up.put_idle(conn)
        else:
            self._send(conn)

    def _connect_failed(self, up: Upstream, exc: BaseException) -> None:
        self.app.counters(up.release).connect_failures += 1
        if not up.down:
            log.warning(
                "instance refused a connection",
                extra={
                    "app": self.app.name,
                    "release": up.release,
                    "target": f"{up.host}:{up.port}",
                    "error": str(exc) or type(exc).__name__,
                },
            )
        up.mark_down()
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        tried.append(up)
        if self.preview is not None:
            nxt = self.app.balancer.pick_preview(self.preview, exclude=tried)
            if nxt is None:
                self.fail(
                    503,
                    f"release {self.preview} is not available on this host: "
                    "its instance refused the connection",
                )
                return
        else:
            nxt = self.app.balancer.pick(exclude=tried)
            if nxt is None:
                self.fail(502, f"no instance of app {self.app.name} accepted a connection")
                return
        self._use(nxt)

    def _send(self, conn: BackendConnection) -> None:
        self.backend = conn
        conn.exchange = self
        conn.preview = self.preview is not None
        conn.idle_ticks = 0
        if conn.status:
            conn.reset()
        transport = conn.transport
        assert transport is not None
        client = self.client
        if client.write_paused:
            conn.pause_reading()
        frames = self.pending
        size = self.pending_size
        self.pending = None
        self.pending_size = 0
        if frames:
            transport.write(self.head + b"".join(frames))
        else:
            transport.write(self.head)
        if self.idempotent and size <= REPLAY_MAX:
            self.sent = frames
            self.sent_size = size
        if size > PENDING_MAX:
            client.update_reading()

    # -- the request body, from the client ---------------------------------

    def body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self.body_raw(data)

    def body_raw(self, data: bytes) -> None:
        if self.finished:
            return
        pending = self.pending
        if pending is not None:
            pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_MAX:
                self.client.update_reading()
            return
        conn = self.backend
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            sent = self.sent
            if sent is not None:
                self.sent_size += len(data)
                if self.sent_size > REPLAY_MAX:
                    self.sent = None
                else:
                    sent.append(data)

    def request_end(self) -> None:
        if self.req_done:
            return
        self.req_done = True
        if self.chunked:
            self.body_raw(b"0\r\n\r\n")
        if self.backend is not None:
            self.backend.idle_ticks = 0

    # -- the response, from the backend ------------------------------------

    def response_complete(self, conn: BackendConnection) -> None:
        self.backend = None
        conn.exchange = None
        conn.reused = True
        if conn.read_paused:
            conn.resume_reading()
        up = conn.upstream
        if conn.keep_alive and self.req_done and not self.upgrade and up.active:
            up.put_idle(conn)
        else:
            conn.close()
        self._finish(conn.status)

    def backend_lost(self, conn: BackendConnection) -> None:
        """The backend connection ended before the response did."""
        self.backend = None
        if self.finished:
            return
        if conn.timed_out and not conn.head_out:
            self.fail(504, "the instance did not answer in time")
        elif not conn.got_bytes:
            if conn.reused and not conn.cut and self.sent is not None and not self.retried:
                # The classic race: the instance closed an idle pooled connection just as
                # this request went out. Replay it once on a fresh connection.
                self.retried = True
                self.pending = self.sent
                self.pending_size = self.sent_size
                self.sent = None
                assert self.upstream is not None
                self._connect(self.upstream)
                return
            self.fail(502, "the instance closed the connection without answering")
        elif not conn.head_out:
            self.fail(502, "the instance sent an incomplete response")
        else:
            # Headers already went out: all we can do is cut the client's connection.
            self.keep_alive = False
            self.client.abort()
            self._finish(502)

    def fail(self, status: int, message: str) -> None:
        """Answer with an error of the router's own (nothing has been sent to the client)."""
        if self.finished:
            return
        self._close_backend()
        client = self.client
        keep = self.keep_alive and self.req_done and not client.closing
        if not keep:
            self.keep_alive = False
        client.write(error_response(status, message, keep))
        self._finish(status)

    def _close_backend(self) -> None:
        """Let go of the backend connection mid-exchange: it cannot be reused."""
        conn = self.backend
        if conn is not None:
            self.backend = None
            conn.exchange = None
            conn.close()

    def _finish(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        counters = self.counters
        if counters is None:
            counters = self.app.counters("")
        else:
            counters.in_flight -= 1
        if not self.tunneling:
            # A tunnel was counted when it opened; its end is no new response.
            latency = time.monotonic() - self.start
            counters.observe(status, latency)
            for flagged in self.flagged:
                flagged.observe(status, latency)
        self.client.exchange_done(self)

    def client_gone(self) -> None:
        """The client closed its connection before the response was complete."""
        if self.finished:
            return
        self._close_backend()
        self.finished = True
        counters = self.counters
        if counters is None:
            counters = self.app.counters("")
        else:
            counters.in_flight -= 1
        if not self.tunneling:
            # nginx's 499: not the instance's fault, not a 5xx.
            counters.observe(499, time.monotonic() - self.start)

    # -- Upgrade / WebSocket -------------------------------------------------

    def start_tunnel(self, conn: BackendConnection, rest: bytes) -> None:
        """The instance switched protocols: from now on, pipe bytes both ways."""
        self.tunneling = True
        if self.counters is not None:
            self.counters.observe(conn.status, time.monotonic() - self.start)
        if rest:
            self.client.write(rest)
        self.client.start_tunnel(conn)

    def tunnel_closed(self) -> None:
        if self.finished:
            return
        self.keep_alive = False
        self.client.close()
        self._finish(101)
