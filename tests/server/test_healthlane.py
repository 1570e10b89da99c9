"""/healthz in a thread of its own (server/healthlane.py): which bytes are a health request,
the lane answering while the event loop is held up (and 503 once it stalled), and a real
server handing every other request, kept-alive or pipelined after health requests, to
uvicorn untouched."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest

from conveyor.server import healthlane
from conveyor.server.healthlane import HealthLane, health_request, keeps_alive
from tests.helpers import ServerProcess, running_server, wait_for

H11 = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (H11, len(H11)),
        (H11 + b"GET /api/status HTTP/1.1\r\n", len(H11)),  # pipelined: only the first
        (b"GET /healthz HTTP/1.0\r\n\r\n", 25),
        (b"GET /hea", 0),  # maybe one: look again
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 0),
        (b"GET /healthz?x=1 HTTP/1.1\r\n\r\n", None),  # any other request: uvicorn's
        (b"HEAD /healthz HTTP/1.1\r\n\r\n", None),
        (b"GET /api/status HTTP/1.1\r\n\r\n", None),
        (b"POST /healthz HTTP/1.1\r\n\r\n", None),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", None),  # a body
        (b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
        (b"\x16\x03\x01\x02\x00", None),  # a TLS hello
        (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 2000, None),  # too long to be ours
    ],
)
def test_which_bytes_are_a_health_request(data: bytes, size: int | None) -> None:
    assert health_request(data) == size


@pytest.mark.parametrize(
    ("request_", "alive"),
    [
        (H11, True),
        (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET /healthz HTTP/1.1\r\nconnection: Close\r\n\r\n", False),
        (b"GET /healthz HTTP/1.0\r\n\r\n", False),
    ],
)
def test_keep_alive(request_: bytes, alive: bool) -> None:
    assert keeps_alive(request_) is alive


class Echo(asyncio.Protocol):
    """Stands for uvicorn's protocol: says what it got, on the event loop."""

    opened: ClassVar[list[asyncio.Transport]] = []  # closed by the fixture, before its loop closes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        Echo.opened.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"loop got: " + data)


@pytest.fixture
def lane() -> Iterator[tuple[HealthLane, asyncio.AbstractEventLoop, int]]:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    lane = HealthLane.bind("127.0.0.1", 0)  # in-process, never re-opened: the kernel's
    port = lane.sock.getsockname()[1]
    loop.call_soon_threadsafe(lane.start, loop, Echo, lambda: [(b"server", b"t")])
    yield lane, loop, port
    lane.stop()
    # the connections handed to the loop: closed on it (their sockets close a turn later),
    # or a transport collected during a later test warns there (unraisable, an error)
    closed = threading.Event()

    def close_all() -> None:
        while Echo.opened:
            Echo.opened.pop().close()
        loop.call_soon(loop.call_soon, closed.set)

    loop.call_soon_threadsafe(close_all)
    closed.wait(5)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(timeout=5)
    loop.close()


def exchange(conn: socket.socket, data: bytes, until: bytes) -> bytes:
    conn.sendall(data)
    got = b""
    while until not in got:
        chunk = conn.recv(65536)
        assert chunk, got
        got += chunk
    return got


def test_the_lane_answers_while_the_loop_is_held_up_then_503_once_it_stalled(
    lane: tuple[HealthLane, asyncio.AbstractEventLoop, int],
) -> None:
    health, loop, port = lane
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        first = exchange(conn, H11, b'"ok"')
        assert first.startswith(b"HTTP/1.1 200 OK\r\nserver: t\r\n"), first
        # the loop held up (as by a long callback): the lane answers all the same
        release = threading.Event()
        loop.call_soon_threadsafe(release.wait, 30)
        try:
            started = time.monotonic()
            held = exchange(conn, H11, b'"ok"')
            assert held.startswith(b"HTTP/1.1 200 OK"), held
            assert time.monotonic() - started < 5  # generous: a thread's answer, not the loop's
            health.stalled = 0.5
            time.sleep(0.6)
            stalled = exchange(conn, H11, b"}")
            assert stalled.startswith(b"HTTP/1.1 503 Service Unavailable"), stalled
            assert b"the server's event loop has not run for" in stalled
        finally:
            release.set()
        health.stalled = 5.0
        # any other request: the connection goes to the loop, untouched (the pipelined
        # health request after it is the loop's too)
        other = exchange(conn, b"GET /other HTTP/1.1\r\n\r\n" + H11, H11)
        assert other == b"loop got: GET /other HTTP/1.1\r\n\r\n" + H11 or other.startswith(
            b"loop got: GET /other"
        ), other
    assert health.answered == 3


def test_a_health_request_in_pieces_and_http_1_0(
    lane: tuple[HealthLane, asyncio.AbstractEventLoop, int],
) -> None:
    _, _, port = lane
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /heal")
        time.sleep(0.05)
        assert exchange(conn, b"thz HTTP/1.1\r\n\r\n", b'"ok"').startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        got = exchange(conn, b"GET /healthz HTTP/1.0\r\n\r\n", b'"ok"')
        assert b"\r\nconnection: close\r\n" in got
        assert conn.recv(10) == b""  # closed after it


def test_an_idle_health_connection_is_closed_and_a_slow_request_goes_to_the_loop(
    lane: tuple[HealthLane, asyncio.AbstractEventLoop, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, port = lane
    monkeypatch.setattr(healthlane, "IDLE", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        exchange(conn, H11, b'"ok"')
        assert conn.recv(10) == b""  # closed once idle
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /heal")
        time.sleep(healthlane.PATIENCE + 0.3)
        got = exchange(conn, b"thz HTTP/1.1\r\n\r\n", b"\r\n\r\n")
        assert got.startswith(b"loop got: GET /heal"), got  # uvicorn's timeouts apply


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("lane") / "data") as proc:
        yield proc


def test_a_real_server_answers_health_and_hands_the_rest_to_uvicorn(server: ServerProcess) -> None:
    token = f"Authorization: Bearer {server.token}\r\n".encode()
    status = b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + token + b"\r\n"
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        for _ in range(3):  # kept alive: health requests, then the API on the same one
            assert exchange(conn, H11, b'"ok"').startswith(b"HTTP/1.1 200 OK")
        # pipelined: a health request then a read, in one write; then health again (uvicorn's)
        both = exchange(conn, H11 + status, b"\r\n\r\n[]")  # no app yet
        assert both.count(b"HTTP/1.1 200 OK") == 2 and b'"ok"' in both, both
        assert exchange(conn, H11, b'"ok"').startswith(b"HTTP/1.1 200 OK")
    # httpx's pool: /healthz, then API calls, on one connection
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path in ("/healthz", "/api/status", "/healthz", "/login"):
            r = client.get(path, headers={"Authorization": f"Bearer {server.token}"})
            assert r.status_code == 200, (path, r.text)
        assert r.headers["x-frame-options"]
    wait_for(lambda: server.get("/api/status") is not None)


def test_a_kept_alive_connection_outlives_the_clients_idle_time(server: ServerProcess) -> None:
    """The server keeps an idle connection longer than httpx does (5 s): a client always
    drops it first, never sends a request just as the server closes it (a reset)."""
    client_idle = httpx.Limits().keepalive_expiry
    assert client_idle is not None and client_idle * 2 < healthlane.IDLE
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    token = f"Authorization: Bearer {server.token}\r\n".encode()
    status = b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + token + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        assert exchange(conn, status, b"\r\n\r\n[]").startswith(b"HTTP/1.1 200 OK")
        conn.setblocking(False)
        deadline = time.monotonic() + client_idle + 1  # idle past the client's expiry
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):  # open, nothing to read: as it should
                assert conn.recv(1, socket.MSG_PEEK) != b"", "the server closed it"
            time.sleep(0.2)
        conn.setblocking(True)
        assert exchange(conn, status, b"\r\n\r\n[]").startswith(b"HTTP/1.1 200 OK")
