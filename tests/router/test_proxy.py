"""HTTP through the embedded router: framing, headers, keep-alive, streaming, Upgrade, errors."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.agent.routing.embedded import EmbeddedRouter
from tests.router.backend import Backend, pattern
from tests.router.support import (
    BACKEND_TIMEOUT,
    Apps,
    Responses,
    admin,
    client,
    dead_port,
    raw_exchange,
    release_metrics,
)

Instances = Callable[..., list[Backend]]


def test_forwarded_headers_and_hop_by_hop(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with client(spec) as http:
        seen = http.get(
            "/headers",
            headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1", "X-Kept": "2"},
        ).json()
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{spec.port}"
        assert seen["host"] == f"127.0.0.1:{spec.port}"
        assert seen["x-kept"] == "2"
        assert "x-secret" not in seen and "connection" not in seen
        chained = http.get("/headers", headers={"X-Forwarded-For": "203.0.113.9"}).json()
        assert chained["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_keep_alive_on_both_sides(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        responses = Responses(sock)
        for _ in range(50):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = responses.next()
            assert head.startswith(b"HTTP/1.1 200") and body == b"a\n"
    # 50 requests on one client connection went over one pooled backend connection.
    assert a.connections == 1 and a.requests == 50
    # a client that shuts its side after the request still gets the answer, then the end
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        sock.sendall(b"GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"a slow\n")


def test_pipelined_requests_answered_in_order(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    requests = b"".join(
        b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"/slow?s=0.2", b"/", b"/status/201")
    )
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        sock.sendall(requests)
        responses = Responses(sock)
        heads = [responses.next() for _ in range(3)]
    assert [h.split(b"\r\n")[0] for h, _ in heads] == [
        b"HTTP/1.1 200 ",
        b"HTTP/1.1 200 ",
        b"HTTP/1.1 201 ",
    ]
    assert heads[0][1] == b"a slow\n" and heads[1][1] == b"a\n"


def test_chunked_request_and_response(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with client(spec) as http:
        parts = [b"first,", b"second,", b"third"]
        echoed = http.post("/echo", content=iter(parts))
        assert echoed.status_code == 200 and echoed.content == b"".join(parts)
        assert echoed.headers["transfer-encoding"] == "chunked"
        pieces = http.get("/chunked?n=7")
        assert pieces.text == "".join(f"piece-{i}\n" for i in range(7))
        # a response delimited by the end of the connection becomes chunked for HTTP/1.1
        ended = http.get("/eof")
        assert ended.text == "until the end\n" * 100
        assert ended.headers["transfer-encoding"] == "chunked"
        assert http.get("/").text == "a\n"


def test_head_204_304_keep_the_connection_usable(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        responses = Responses(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = responses.head()
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 2" in head
        for path, status in ((b"/status/204", b"204"), (b"/status/304", b"304"), (b"/", b"200")):
            sock.sendall(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            got, body = responses.next()
            assert got.split(b" ")[1] == status
        assert body == b"a\n"
    assert a.connections == 1


def test_http10_clients(apps: Apps, instances: Instances) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    # no keep-alive: the router closes after the response
    answer = raw_exchange(spec.port, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\na\n")
    assert b"Connection: close" in answer
    # a chunked response reaches an HTTP/1.0 client unchunked, delimited by the close
    answer = raw_exchange(spec.port, b"GET /chunked?n=3 HTTP/1.0\r\n\r\n")
    assert answer.endswith(b"\r\n\r\npiece-0\npiece-1\npiece-2\n")
    assert b"chunked" not in answer.lower()
    # HTTP/1.0 keep-alive
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        responses = Responses(sock)
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head, body = responses.next()
            assert b"Connection: keep-alive" in head and body == b"a\n"


def test_large_bodies_stream_both_ways(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    size = 50 * 1024 * 1024
    pid = _router_pid(router)
    before = _rss(pid)

    def upload() -> Iterator[bytes]:
        yield from pattern(size)

    expected = hashlib.sha256(b"".join(pattern(size))).hexdigest()
    with client(spec, timeout=60) as http:
        sent = http.post("/upload", content=upload()).json()
        assert sent == {"bytes": size, "sha256": expected}
        digest = hashlib.sha256()
        received = 0
        with http.stream("GET", f"/big?size={size}") as response:
            assert response.headers["content-length"] == str(size)
            for piece in response.iter_raw():
                digest.update(piece)
                received += len(piece)
        assert received == size and digest.hexdigest() == expected
    # bounded memory: nothing close to the 50 MB went into the router's heap
    assert _rss(pid) - before < 20 * 1024 * 1024


def _router_pid(router: EmbeddedRouter) -> int:
    with admin(router) as http:
        return int(http.get("/healthz").json()["pid"])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_upgrade_pipes_bytes_both_ways(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with socket.create_connection(("127.0.0.1", spec.port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello"
        )
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"hello"):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {buf!r}"
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 101")
        assert b"Upgrade: echo" in buf
        for message in (b"ping", b"x" * 100_000):
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(65536)
            assert got == message
        counters = release_metrics(router, spec.app)["a"]
        assert counters.in_flight == 1  # an open tunnel is in flight
        # half-close: what was sent before the end still comes back, then the end
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest == b"last words"
    deadline = time.monotonic() + 5
    while release_metrics(router, spec.app)["a"].in_flight != 0:
        assert time.monotonic() < deadline, "the tunnel stayed in flight"
        time.sleep(0.05)
    assert release_metrics(router, spec.app)["a"].requests == 1


def test_retry_when_a_target_refuses(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    (b,) = instances("b")
    spec = apps.serve({"a": (dead_port(), 50), "b": (b.port, 50)})
    with client(spec) as http:
        answers = [http.get("/") for _ in range(40)]
    assert {r.status_code for r in answers} == {200}
    assert {r.text for r in answers} == {"b\n"}
    counters = release_metrics(router, spec.app)
    assert counters["a"].connect_failures >= 1
    assert counters["a"].requests == 0 and counters["b"].requests == 40
    assert counters["b"].errors_5xx == 0


def test_stale_pooled_connection_is_replayed_for_idempotent_requests(
    apps: Apps, instances: Instances, router: EmbeddedRouter
) -> None:
    # The instance answers one request per connection, then closes the next one unanswered.
    (a,) = instances("a", close_after=1)
    spec = apps.serve({"a": (a.port, 100)})
    with client(spec) as http:
        for _ in range(5):
            assert http.get("/").status_code == 200
            assert http.put("/upload", content=b"x" * 1000).json()["bytes"] == 1000
        # never replayed: a POST may have had effects
        assert http.post("/upload", content=b"once").status_code == 502
    counters = release_metrics(router, spec.app)["a"]
    assert counters.requests == 11 and counters.errors_5xx == 1


def test_no_target_is_503_and_dead_targets_502(
    apps: Apps, router: EmbeddedRouter, instances: Instances
) -> None:
    (a,) = instances("a")
    empty = apps.serve({"a": (a.port, 0)})
    dead = apps.serve({"d": (dead_port(), 100)})
    with client(empty) as http:
        answer = http.get("/")
        assert answer.status_code == 503 and "no instance" in answer.text
        assert http.get("/").status_code == 503  # the connection stays usable
    with client(dead) as http:
        assert http.get("/").status_code == 502
    assert release_metrics(router, empty.app)[""].errors_5xx == 2
    dead_counters = release_metrics(router, dead.app)["d"]
    assert dead_counters.errors_5xx == 1 and dead_counters.connect_failures == 1


def test_silent_instance_is_504(apps: Apps, instances: Instances, router: EmbeddedRouter) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    with client(spec) as http:
        started = time.monotonic()
        answer = http.get(f"/slow?s={BACKEND_TIMEOUT + 2}")
        took = time.monotonic() - started
    assert answer.status_code == 504
    assert BACKEND_TIMEOUT <= took < BACKEND_TIMEOUT + 1.5
    assert release_metrics(router, spec.app)["a"].errors_5xx == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 300_000 + b"\r\n\r\n", b"431"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", b"405"),
    ],
)
def test_bad_requests_are_refused(
    apps: Apps, instances: Instances, request_bytes: bytes, status: bytes
) -> None:
    (a,) = instances("a")
    spec = apps.serve({"a": (a.port, 100)})
    answer = raw_exchange(spec.port, request_bytes)
    assert answer.split(b" ")[1] == status
    assert a.requests == 0
