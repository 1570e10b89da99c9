"""The CLI's client: what must not happen twice carries one Idempotency-Key across retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
import typer

from conveyor.cli.client import Client, _retry_after


class Busy(BaseHTTPRequestHandler):
    """A server that is busy (503, Retry-After: 0) for its first `busy` POSTs, then answers."""

    busy = 2
    keys: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        Busy.keys.append(self.headers.get("idempotency-key"))
        if len(Busy.keys) <= Busy.busy:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            body = b'{"detail": "busy"}'
        else:
            self.send_response(201)
            body = json.dumps({"id": 7}).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy() -> Iterator[str]:
    Busy.keys = []
    server = ThreadingHTTPServer(("127.0.3.10", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.3.10:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_deploy_is_retried_with_its_key_and_a_plain_post_is_not(busy: str) -> None:
    client = Client(busy, "cvy_test")
    assert client.post("/api/apps/shop/environments/production/deploy", {}, once=True) == {"id": 7}
    assert len(Busy.keys) == 3 and len(set(Busy.keys)) == 1 and Busy.keys[0]
    first = Busy.keys[0]

    client.post("/api/apps/shop/environments/production/deploy", {}, once=True)
    assert Busy.keys[3] not in (None, first)  # each command its own key

    Busy.keys, Busy.busy = [], 1
    with pytest.raises(typer.Exit) as exited:  # a message and exit code 1, tried once
        client.post("/api/hosts", {"name": "web-1"})
    assert exited.value.exit_code == 1 and Busy.keys == [None]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("120", 10.0),
        ("-4", 0.0),
        ("nan", 0.5),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 0.5),
        (None, 0.5),
    ],
)
def test_retry_after(header: str | None, expected: float) -> None:
    headers = {"retry-after": header} if header is not None else {}
    assert _retry_after(httpx.Response(503, headers=headers), 0.5) == expected
