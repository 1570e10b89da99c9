"""Requests and latency from HAProxy's per-request logs, received as UDP datagrams.

HAProxy's stats have no latency histogram, only averages. Every request's log line
(see LOG_FORMAT) carries its backend, server slot, status and duration; the driver
reads them in its own event loop and buckets them per release.

Why UDP on loopback and not a unix datagram socket: the kernel queues at most
net.unix.max_dgram_qlen (10 by default) datagrams on a unix socket, and HAProxy
drops a log line rather than wait. Measured with wrk at saturation on two cores, a
unix socket lost 13% of the lines, loopback UDP with a 4 MiB receive buffer none.
Lines carry a secret token, so another local process cannot forge them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from bisect import bisect_left
from collections.abc import Callable

from conveyor.agent.routing.haproxy_config import LOG_TAG
from conveyor.agent.routing.spec import LATENCY_BUCKETS

# (app backend, server slot, HTTP status, latency in seconds, X-Conveyor-Flags answers
# or "" without flags)
Sample = tuple[str, str, int, float, str]
RCVBUF = 4 << 20
DATAGRAM = 8192  # haproxy_config's `log … len`


def parse_line(line: bytes, token: bytes) -> Sample | None:
    """`cvy1 <token> be_shop s2 200 3 2871 a=on; b=off` ->
    ("be_shop", "s2", 200, 0.002871, "a=on; b=off"); a line of a HAProxy configured before
    the answers were logged has 7 fields (no answers)."""
    fields = line.split(None, 7)
    if len(fields) < 7 or fields[0] != LOG_TAG.encode() or fields[1] != token:
        return None
    answers = fields[7].strip().decode("latin-1") if len(fields) == 8 else ""
    if answers == "-":
        answers = ""
    try:
        status = int(fields[4])
    except ValueError:
        return None
    try:
        micros = int(fields[6])
    except ValueError:
        micros = -1
    if micros >= 0:
        return fields[2].decode(), fields[3].decode(), status, micros / 1e6, answers
    try:
        millis = int(fields[5])
    except ValueError:
        return None
    if millis < 0:
        return None
    return fields[2].decode(), fields[3].decode(), status, millis / 1e3, answers


def bucket_index(latency: float) -> int:
    """Index of the first LATENCY_BUCKETS bound >= latency (len() for +Inf)."""
    return bisect_left(LATENCY_BUCKETS, latency)


class LogReceiver:
    """Listens on 127.0.0.1:`port` (0: any free port) for HAProxy's log lines and hands
    each parsed one to `sink`. Lines sent while nobody listens are lost."""

    def __init__(self, port: int, token: str, sink: Callable[[Sample], None]) -> None:
        self.port = port
        self.token = token.encode()
        self.sink = sink
        self.received = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Bind the port; a port taken meanwhile by another process gives way to a new one."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError:
                if not self.port:
                    raise
                sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)
        self._sock = sock

    def _drain(self) -> None:
        # One wake-up reads everything queued, so a burst costs one loop iteration.
        sock = self._sock
        if sock is None:
            return
        for _ in range(10_000):
            try:
                data = sock.recv(DATAGRAM)
            except OSError:
                return  # BlockingIOError: all read
            sample = parse_line(data, self.token)
            if sample is not None:
                self.received += 1
                self.sink(sample)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
