"""A minimal, fast HTTP/1.1 keep-alive server (uvloop + httptools) standing in for an app.

The router-cost benchmark needs a backend much faster than the router it
measures, or it would only measure the backend.

    python bench/fast_backend.py PORT [RELEASE]
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Http(asyncio.Protocol):
    def __init__(self, body: bytes) -> None:
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(self.response)


async def serve(port: int, release: str) -> None:
    body = ('{"release": "%s"}\n' % release).encode()  # noqa: UP031
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(body), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "bench"))
