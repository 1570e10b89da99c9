"""A fast HTTP/1.1 keep-alive instance (uvloop + httptools), run as its own process.

    python -m testbed.backend PORT RELEASE [INSTANCE]

The one stand-in app of the router tests and benches: much faster than the routers it
sits behind, so a bench measures the router, not the backend. Answers every request with
the release id as body and headers X-Release and X-Instance; `?delay=S` answers after S
seconds, `?status=N` with that status. It prints `ready` once it listens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httptools
import uvloop

from testbed.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]


class _Http(asyncio.Protocol):
    def __init__(self, release: bytes, instance: bytes) -> None:
        self.release = release
        self.instance = instance
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport: Any = None
        # the answer to a plain request, built once: what a bench's millions of requests get
        self.plain = self._head(200, keep=True) + release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def _head(self, status: int, *, keep: bool) -> bytes:
        return (
            b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Release: %s\r\nX-Instance: %s\r\n%s\r\n"
            % (
                status,
                len(self.release),
                self.release,
                self.instance,
                b"" if keep else b"Connection: close\r\n",
            )
        )

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        keep = self.parser.should_keep_alive()
        if keep and b"?" not in url:
            self.transport.write(self.plain)
            return
        query = parse_qs(url.partition(b"?")[2].decode())
        status = int(query.get("status", ["200"])[0])
        delay = float(query.get("delay", ["0"])[0])
        head = self._head(status, keep=keep)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._send, head + self.release, keep)
        else:
            self._send(head + self.release, keep)

    def _send(self, response: bytes, keep: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if not keep:
            self.transport.close()


async def _serve(port: int, release: str, instance: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Http(release.encode(), instance.encode()), "127.0.0.1", port, backlog=1024
    )
    print("ready", flush=True)
    await server.serve_forever()


class Backend:
    """One instance process of a release, on a loopback port."""

    def __init__(self, release: str, instance: str) -> None:
        self.release = release
        self.instance = instance
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def spawn(self) -> Backend:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testbed.backend",
                str(self.port),
                self.release,
                self.instance,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def wait_ready(self) -> Backend:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"backend {self.instance} did not start: {line!r}"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "1"))
