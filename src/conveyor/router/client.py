"""A client's connection to an app's public port: parses requests, one exchange at a time."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from conveyor.flags.header import NO_OBSERVERS
from conveyor.hostroutes import strip_url
from conveyor.router.exchange import PENDING_MAX, Exchange, error_response
from conveyor.router.redirect import ACME_PATH, acme_answer, https_redirect
from conveyor.router.request_head import rewrite_request_head
from conveyor.router.shared import SharedPort

if TYPE_CHECKING:
    # Types only (see the cycles explained in exchange.py and service.py).
    from conveyor.router.backend import BackendConnection
    from conveyor.router.service import App

log = logging.getLogger("conveyor.router")

MAX_HEADER_BYTES = 64 * 1024
# Seconds a refused client's connection is kept half-open so that it reads the answer.
LINGER = 2.0


class _Reject(Exception):
    def __init__(self, status: int, message: str, response: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        # the whole answer, when it is not an error page (a redirect, an ACME answer)
        self.response = response


class ClientConnection(asyncio.Protocol):
    """Requests from one client connection (keep-alive, pipelining, Upgrade)."""

    __slots__ = (
        "app",
        "backend_full",
        "closed",
        "closing",
        "current",
        "eof",
        "header_bytes",
        "headers",
        "home",
        "idle_ticks",
        "last",
        "lingering",
        "parser",
        "parsing",
        "peer",
        "queue",
        "reading",
        "shared",
        "transport",
        "tunnel",
        "upgrading",
        "url",
        "write_paused",
    )

    def __init__(self, home: App | SharedPort) -> None:
        # where this connection is counted (its app, or the shared port it came in on)
        self.home = home
        # the shared port whose table picks each request's app (None: always `app`)
        self.shared: SharedPort | None = None
        if isinstance(home, SharedPort):
            self.shared = home
            self.app: App = None  # type: ignore[assignment]  # set by each request
        else:
            self.app = home
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.peer = b""
        # The exchange being answered; requests pipelined behind it wait in `queue`.
        self.current: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        # The exchange whose request is being parsed (the current one, or a queued one).
        self.parsing: Exchange | None = None
        self.last: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        # Bytes received while in a request head; -1 outside of one.
        self.header_bytes = -1
        self.write_paused = False
        self.reading = True
        self.backend_full = False
        # Close once the current response is complete (the app is being removed).
        self.closing = False
        self.closed = False
        self.eof = False
        self.lingering = False
        self.upgrading: Exchange | None = None
        self.tunnel: BackendConnection | None = None
        self.idle_ticks = 0

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = str(peer[0]).encode()
        self.home.connections.add(self)
        if self.home.removed:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.home.connection_lost(self)
        ex = self.current
        if ex is not None:
            self.current = None
            ex.client_gone()
        if self.queue:
            self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        self.idle_ticks = 0
        tunnel = self.tunnel
        if tunnel is not None:
            if tunnel.transport is not None:
                tunnel.transport.write(data)
            return
        upgrading = self.upgrading
        if upgrading is not None:
            upgrading.body_raw(data)
            return
        if self.header_bytes >= 0:
            # Counted per read, not per header: a head may overshoot by one read at most.
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, "request headers too large")
                return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            ex = self.last
            if ex is None or ex.finished or not ex.upgrade:
                self.close()
                return
            self.upgrading = ex
            rest = data[exc.args[0] :]
            if rest:
                ex.body_raw(rest)
        except HttpParserError as exc:
            self._bad_request(exc)

    def _bad_request(self, exc: HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, _Reject) and cause.response is not None:
            self._refuse(cause.status, str(cause), cause.response)
            return
        if isinstance(cause, _Reject):
            status, message = cause.status, str(cause)
        elif isinstance(exc, HttpParserCallbackError):
            log.error("proxy error", exc_info=cause or exc, extra={"app": self.home.name})
            status, message = 500, "internal error in the router"
        else:
            status, message = 400, f"malformed request: {exc}"
        self._refuse(status, message)

    def _refuse(self, status: int, message: str, response: bytes | None = None) -> None:
        """Answer a request the router will not relay, and close."""
        if self.current is not None or self.closed:
            self.close()
            return
        self.transport.write(response or error_response(status, message, False))
        # Closing with unread bytes would reset the connection, and the client might lose
        # the answer: end our side, drop what still comes in, close a little later.
        self.lingering = True
        self.closed = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, self.transport.close)

    def eof_received(self) -> bool | None:
        tunnel = self.tunnel
        if tunnel is not None:
            # Half-close: pass the end on, keep relaying the other way until it ends too.
            self.eof = True
            if tunnel.eof:
                tunnel.close()
                self.close()
            elif tunnel.transport is not None and tunnel.transport.can_write_eof():
                tunnel.transport.write_eof()
            return True
        if self.current is not None:
            # A client that shut its side after sending a request still wants the answer.
            self.closing = True
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self._backend()
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.idle_ticks = 0
        conn = self._backend()
        if conn is not None:
            conn.resume_reading()

    def _backend(self) -> BackendConnection | None:
        if self.tunnel is not None:
            return self.tunnel
        ex = self.current
        return ex.backend if ex is not None else None

    # -- what exchanges call -----------------------------------------------

    def write(self, data: bytes | bytearray) -> None:
        if not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def set_backend_full(self, full: bool) -> None:
        self.backend_full = full
        self.update_reading()

    def update_reading(self) -> None:
        """Read from the client only when what it sends can go somewhere."""
        if self.closed:
            return
        ex = self.current
        want = not (
            self.backend_full
            or self.queue
            or (ex is not None and ex.pending is not None and ex.pending_size > PENDING_MAX)
        )
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def exchange_done(self, ex: Exchange) -> None:
        if self.current is ex:
            self.current = None
        self.backend_full = False
        if self.closed:
            return
        if not ex.keep_alive or self.closing or not ex.req_done:
            self.close()
            return
        queue = self.queue
        if queue:
            nxt = self.current = queue.popleft()
            nxt.begin()
            self.update_reading()
        elif not self.reading:
            self.update_reading()

    def start_tunnel(self, conn: BackendConnection) -> None:
        self.tunnel = conn
        self.upgrading = None
        if self.write_paused:
            conn.pause_reading()

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.header_bytes = -1
        parser = self.parser
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Reject(405, "CONNECT is not supported")
        upgrade = parser.should_upgrade()
        keep_alive = parser.should_keep_alive()
        url = self.url
        shared = self.shared
        proto = b"http"
        if shared is not None:
            url = self._pick(shared, url)
            proto = shared.proto
        req = rewrite_request_head(method, url, self.headers, self.peer, upgrade, proto)
        # Only HTTP/1.1 keeps a connection alive without saying so: skip formatting the
        # version in the common case.
        http10 = (req.connection or not keep_alive) and parser.get_http_version() == "1.0"
        app = self.app
        cookie_release = None
        if req.cookie is not None and app.sticky:
            cookie_release = app.cookie_release(req.cookie)
        preview = req.preview
        head = req.head
        flagged = NO_OBSERVERS
        if app.flags is not None:
            # the flags' answers for this request's user, as the head's last header
            head, flagged = app.flags.added_to(head, self.headers, req.cookie)
        ex = Exchange(
            self,
            method,
            head,
            keep_alive and not upgrade,
            http10,
            upgrade,
            req.chunked,
            req.has_body,
            cookie_release,
            None if preview is None else preview.strip().decode("latin-1"),
        )
        ex.flagged = flagged
        self._enqueue(ex)

    def _pick(self, shared: SharedPort, url: bytes) -> bytes:
        """The app of this request on a shared port, by Host and path; the URL to relay."""
        host = next((v for n, v in self.headers if n.lower() == b"host"), None)
        if shared.tls is None and url.startswith(ACME_PATH):
            answer = acme_answer(shared.challenges, url)
            raise _Reject(answer[0], "ACME challenge", answer[1])
        picked = shared.select(host, url)
        if picked is None:
            name = "(none)" if host is None else host.decode("latin-1")
            raise _Reject(404, f"no app on this host answers to {name}")
        app = self.app = picked.target
        tls = app.spec.tls
        if tls is not None and tls.redirect_http and shared.tls is None and host is not None:
            raise _Reject(308, "to HTTPS", https_redirect(host, tls.port, url))
        return strip_url(url, picked.strip) if picked.strip else url

    def _enqueue(self, ex: Exchange) -> None:
        """Answer `ex` now, or after the exchanges pipelined before it."""
        self.parsing = self.last = ex
        if self.current is None:
            self.current = ex
            ex.begin()
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(ex)
            self.update_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.body(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is not None:
            self.parsing = None
            if not ex.req_done:
                ex.request_end()
