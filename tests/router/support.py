"""Helpers of the router tests: apps on fresh ports, raw sockets, admin calls."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.spec import RouteSpec, Target
from tests.helpers import free_port

T = TypeVar("T")

# Worker processes of the test routers (EmbeddedRouter reads the same variable): the suite
# runs with 1 (the default) and again with CONVEYOR_ROUTER_WORKERS=2.
WORKERS = int(os.environ.get("CONVEYOR_ROUTER_WORKERS", "1"))

# The router of these tests answers 504 after this long; slow paths stay well below it.
BACKEND_TIMEOUT = 2.0

_names = itertools.count()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Apps:
    """Applies specs to the test router on fresh ports, and removes them afterwards."""

    def __init__(self, router: EmbeddedRouter) -> None:
        self.router = router
        self.names: list[str] = []

    def serve(
        self,
        targets: dict[str, tuple[int, int]] | list[Target],
        *,
        name: str | None = None,
        port: int | None = None,
        **options: Any,
    ) -> RouteSpec:
        """Route a new app; `targets` maps release -> (port, weight) or is a list of Target."""
        if isinstance(targets, dict):
            targets = [Target(release=r, port=p, weight=w) for r, (p, w) in targets.items()]
        spec = RouteSpec(
            app=name or f"app-{next(_names)}",
            port=port or free_port(),
            bind="127.0.0.1",
            targets=targets,
            **options,
        )
        self.apply(spec)
        return spec

    def apply(self, spec: RouteSpec) -> None:
        run(self.router.apply(spec))
        if spec.app not in self.names:
            self.names.append(spec.app)

    def cleanup(self) -> None:
        for name in self.names:
            run(self.router.remove(name))


def client(spec: RouteSpec, **kw: Any) -> httpx.Client:
    kw.setdefault("timeout", 10)
    return httpx.Client(base_url=f"http://127.0.0.1:{spec.port}", trust_env=False, **kw)


def admin(router: EmbeddedRouter) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(router.socket_path)),
        base_url="http://router",
        trust_env=False,
        timeout=10,
    )


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the router closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class Responses:
    """Reads responses (Content-Length framed, or none) one by one from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {self.buf!r}")
        self.buf += chunk

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def next(self) -> tuple[bytes, bytes]:
        """(head, body) of the next response."""
        head = self.head()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 204")):
            length = 0
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return head, body


def release_metrics(router: EmbeddedRouter, app: str) -> dict[str, Any]:
    metrics = run(router.metrics())
    found = metrics.apps.get(app)
    return {} if found is None else {r: c for r, c in found.releases.items()}


def dead_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
