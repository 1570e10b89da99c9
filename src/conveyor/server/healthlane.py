"""`GET /healthz` answered in a thread of its own, never waiting for the event loop's turn.

Under load (200 readers, 50 agents long-polling and reporting, a deployment) the fast
path (fastpath.py) still answered `/healthz` only when the loop came to it: behind every
request ready before it, and behind the GIL held by the request threads. Here a thread
owns the listening socket: it accepts each connection and peeks at its first bytes.
A connection that asks `GET /healthz` (the probes of a load balancer, of systemd, of an
orchestrator) stays here, each of its health requests answered by this thread; any
other request, on a new connection or after health requests on a kept-alive one, hands
the connection to the event loop untouched (nothing of it consumed), where uvicorn
serves it as it would have from its own listener.

The answer is the fast path's (same body and headers) while the event loop is alive: the
loop beats every BEAT seconds, and when it has not beaten for STALLED seconds the answer
is 503, saying since when (a wedged loop used to leave `/healthz` unanswered).

Plain HTTP only: with TLS the bytes cannot be peeked at, and uvicorn listens itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

import uvicorn

from conveyor.server.fastpath import HEALTH, health, json_headers

log = logging.getLogger("conveyor.server")

BEAT = 0.25  # seconds between the event loop's beats
STALLED = 5.0  # seconds without a beat after which /healthz answers 503
PEEK = 8192  # bytes looked at: a health request is far shorter
REQUESTS = (b"GET /healthz HTTP/1.1\r\n", b"GET /healthz HTTP/1.0\r\n")
AGAIN = 0.005  # seconds before looking again at a connection whose request is incomplete
PATIENCE = 0.5  # seconds an incomplete request may take here before uvicorn gets it
# seconds a kept-alive connection may idle, here and in uvicorn (serve.py): longer than
# the clients' own (httpx, so the agents and the CLI: 5 s), so that a client always drops
# an idle connection first. Equal, a request sent on one just as the server closed it met
# a reset (seen once in a test: `Connection reset by peer` after 5 s idle).
IDLE = 75.0

Headers = Sequence[tuple[bytes, bytes]]
Protocols = Callable[[], asyncio.Protocol]
OFF = "CONVEYOR_HEALTH_LANE"  # "0": no lane, uvicorn listens itself (to compare)


def wanted(host: str, tls: bool) -> bool:
    """Whether the server gets a lane: plain HTTP on an address (a name may stand for
    several, which uvicorn binds each), unless CONVEYOR_HEALTH_LANE=0."""
    if tls or os.environ.get(OFF, "1") == "0":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def health_request(data: bytes) -> int | None:
    """The length of the health request at the start of `data` (0: maybe one, incomplete),
    or None: something else, for the event loop."""
    line = data[: len(REQUESTS[0])]
    if not any(r.startswith(line) for r in REQUESTS):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return 0 if len(data) < PEEK else None
    head = data[: end + 4].lower()
    if b"\ncontent-length:" in head or b"\ntransfer-encoding:" in head or b"\nexpect:" in head:
        return None  # a body: uvicorn's to read
    return end + 4


def keeps_alive(request: bytes) -> bool:
    """HTTP/1.1 unless it says `Connection: close`; HTTP/1.0 never (no keep-alive here)."""
    if request.startswith(REQUESTS[1]):
        return False
    for line in request.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"connection" and b"close" in value:
            return False
    return True


def answer(defaults: Headers, stalled: float | None, keep_alive: bool) -> bytes:
    """The whole response: the fast path's, or 503 when the loop stalled for `stalled` s."""
    if stalled is None:
        status, body = b"HTTP/1.1 200 OK\r\n", json.dumps(health(), separators=(",", ":"))
    else:
        status = b"HTTP/1.1 503 Service Unavailable\r\n"
        body = json.dumps(
            {
                "status": "unavailable",
                "detail": f"the server's event loop has not run for {stalled:.0f} s",
                "version": HEALTH["version"],
            },
            separators=(",", ":"),
        )
    data = body.encode()
    headers = [*defaults, *json_headers(data)]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return status + lines + b"\r\n" + data


def listen(host: str, port: int, *, tls: bool) -> HealthLane | None:
    """The server's lane on host:port, if it gets one (`wanted`); exits as uvicorn does
    when the address cannot be listened on."""
    if not wanted(host, tls):
        return None
    try:
        return HealthLane.bind(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        print(f"conveyor server: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


class HealthLane:
    """The listening socket, its thread, and the hand-over of connections to the loop."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.answered = 0  # health requests answered here (tests read it)
        self.stalled = STALLED
        self._beat = time.monotonic()
        self._defaults: Callable[[], Headers] = list
        self._selector = selectors.DefaultSelector()
        self._waker_r, self._waker_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="conveyor-healthz", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocols: Protocols | None = None
        self._later: dict[socket.socket, float] = {}  # incomplete requests: look again then
        self._since: dict[socket.socket, float] = {}  # when each connection was last heard

    @classmethod
    def bind(cls, host: str, port: int, backlog: int = 2048) -> HealthLane:
        """Listen on host:port as uvicorn would (SO_REUSEADDR; IPv6 for an IPv6 address)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        return cls(sock)

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        protocols: Protocols,
        defaults: Callable[[], Headers],
    ) -> None:
        """Serve: health requests here, the rest through `protocols` on `loop`;
        `defaults`: the headers every answer starts with (uvicorn's date, refreshed)."""
        self._loop, self._protocols, self._defaults = loop, protocols, defaults
        self._beat = time.monotonic()
        loop.call_soon(self._beating)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting; connections kept here are closed, handed-over ones stay."""
        self._stopping = True
        self._waker_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()

    def _beating(self) -> None:
        self._beat = time.monotonic()
        if not self._stopping and self._loop is not None:
            self._loop.call_later(BEAT, self._beating)

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        sel = self._selector
        sel.register(self.sock, selectors.EVENT_READ, "accept")
        sel.register(self._waker_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                timeout = 1.0  # the idle ones are looked for each second
                if self._later:
                    timeout = max(0.0, min(self._later.values()) - time.monotonic())
                for key, _ in sel.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "conn":
                        self._look(key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn in [c for c, at in self._later.items() if at <= now]:
                    del self._later[conn]
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    self._look(conn)
                for conn in [c for c, at in self._since.items() if now - at > IDLE]:
                    if conn not in self._later:
                        self._drop(conn)
        except Exception:  # the lane must never take the server down with it
            log.exception("the /healthz lane failed; connections go to the event loop")
        finally:
            for conn in list(self._since):
                conn.close()
            sel.close()
            self._waker_r.close()
            self._waker_w.close()

    def _drop(self, conn: socket.socket) -> None:
        """Forget and close a connection of the lane."""
        self._since.pop(conn, None)
        self._later.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. too many open files: the next turn tries again
                log.warning("accept failed", exc_info=True)
                return
            conn.setblocking(False)
            self._since[conn] = time.monotonic()
            self._selector.register(conn, selectors.EVENT_READ, "conn")

    def _look(self, conn: socket.socket) -> None:
        """Answer each complete health request at the start of what `conn` sent; hand it
        over at the first other one; wait a moment for the rest of an incomplete one."""
        while True:
            try:
                data = conn.recv(PEEK, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._drop(conn)
                return
            now = time.monotonic()
            size = health_request(data)
            if size == 0 and now - self._since[conn] > PATIENCE:
                size = None  # a slow client: uvicorn has the timeouts for it
            if size is None:
                self._selector.unregister(conn)
                del self._since[conn]
                self._hand_over(conn)
                return
            if size == 0:
                self._selector.unregister(conn)
                self._later[conn] = now + AGAIN
                return
            request = conn.recv(size)  # consumed: exactly the health request
            self._since[conn] = now
            alive = keeps_alive(request)
            age = now - self._beat
            try:
                conn.sendall(answer(self._defaults(), age if age > self.stalled else None, alive))
            except OSError:
                alive = False
            self.answered += 1
            if not alive:
                self._drop(conn)
                return

    def _hand_over(self, conn: socket.socket) -> None:
        loop, protocols = self._loop, self._protocols
        assert loop is not None and protocols is not None
        try:
            loop.call_soon_threadsafe(_adopt, loop, protocols, conn)
        except RuntimeError:  # the loop is closed: the server is stopping
            conn.close()


def _adopt(loop: asyncio.AbstractEventLoop, protocols: Protocols, conn: socket.socket) -> None:
    """On the loop: serve `conn` with uvicorn's protocol, as if its listener accepted it."""
    task = loop.create_task(loop.connect_accepted_socket(protocols, conn))
    task.add_done_callback(functools.partial(_adopted, conn))


def _adopted(conn: socket.socket, task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a connection could not be handed to the event loop: %s", task.exception())
        conn.close()


async def start_uvicorn(server: uvicorn.Server, lane: HealthLane) -> None:
    """uvicorn.Server.startup (0.54), the lane's listener instead of uvicorn's own."""
    await server.lifespan.startup()
    if server.lifespan.should_exit:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
    config = server.config

    def protocols() -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state
        )

    server.servers = []
    lane.start(asyncio.get_running_loop(), protocols, lambda: server.server_state.default_headers)
    server._log_started_message([lane.sock])
    server.started = True
