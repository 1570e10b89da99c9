"""Real HTTP/1.1 instances for the router tests: h11 servers on loopback, in one thread.

Every backend answers as one release and offers a few paths that exercise framing:

    /                 "<release>\\n" (GET and HEAD), header X-Release
    /headers          the request headers as JSON
    /echo             the request body streamed back (chunked response)
    /upload           consumes the body; {"bytes": n, "sha256": ...}
    /big?size=N       N bytes (Content-Length), written in 64 KiB pieces
    /chunked?n=K      a chunked response of K pieces
    /eof              a response delimited by closing the connection
    /status/NNN       that status
    /slow?s=F         answers after F seconds
    /ws               Upgrade: 101, then echoes bytes until the client closes
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from tests.helpers import free_port


class _LoopThread:
    """One event loop in a daemon thread, shared by every backend of the test session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)


_loop: _LoopThread | None = None


def _shared_loop() -> _LoopThread:
    global _loop
    if _loop is None:
        _loop = _LoopThread()
    return _loop


def pattern(size: int) -> Iterator[bytes]:
    """The bytes of /big?size=N, in pieces (deterministic, so the client can check them)."""
    block = bytes(range(256)) * 256
    left = size
    while left > 0:
        piece = block[: min(left, len(block))]
        left -= len(piece)
        yield piece


class Backend:
    """An instance of `release` listening on 127.0.0.1:port."""

    def __init__(self, release: str, port: int | None = None, *, close_after: int = 0) -> None:
        self.release = release
        self.port = port or free_port()
        # When > 0: after this many responses on a connection, the next request on it gets
        # no answer, the connection is just closed (the stale keep-alive race, made certain).
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = _shared_loop()

    def start(self) -> Backend:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._server = self._loop.run(start())
        return self

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        self._loop.run(stop())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while True:
                event = await self._next(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                if self.close_after and served >= self.close_after:
                    break
                served += 1
                self.requests += 1
                keep = await self._answer(conn, event, reader, writer)
                if not keep or conn.our_state is not h11.DONE:
                    break
                while conn.their_state is not h11.DONE:
                    if isinstance(await self._next(conn, reader), h11.ConnectionClosed):
                        return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            return event

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _answer(
        self,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        url = urlsplit(request.target.decode())
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        base = [("X-Release", self.release)]

        async def body() -> bytes:
            data = bytearray()
            if conn.their_state is h11.DONE:
                return b""
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(data)
                else:
                    raise ConnectionError("request body cut")

        async def simple(status: int, payload: bytes, headers: list[tuple[str, str]]) -> bool:
            await body()
            await self._send(
                conn,
                writer,
                h11.Response(
                    status_code=status,
                    headers=[*base, *headers, ("Content-Length", str(len(payload)))],
                ),
            )
            if request.method != b"HEAD" and payload:
                await self._send(conn, writer, h11.Data(data=payload))
            await self._send(conn, writer, h11.EndOfMessage())
            return True

        if path == "/headers":
            headers = {k.decode(): v.decode() for k, v in request.headers}
            return await simple(200, json.dumps(headers).encode(), [])
        if path == "/echo":
            await self._send(conn, writer, h11.Response(status_code=200, headers=base))
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Data):
                    await self._send(conn, writer, h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return False
            await self._send(conn, writer, h11.EndOfMessage())
            return True
        if path == "/upload":
            size = 0
            digest = hashlib.sha256()
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    digest.update(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return False
            payload = json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode()
            return await simple(200, payload, [])
        if path == "/big":
            size = int(query.get("size", "0"))
            await body()
            await self._send(
                conn,
                writer,
                h11.Response(status_code=200, headers=[*base, ("Content-Length", str(size))]),
            )
            for piece in pattern(size):
                await self._send(conn, writer, h11.Data(data=piece))
            await self._send(conn, writer, h11.EndOfMessage())
            return True
        if path == "/chunked":
            await body()
            await self._send(conn, writer, h11.Response(status_code=200, headers=base))
            for i in range(int(query.get("n", "3"))):
                await self._send(conn, writer, h11.Data(data=f"piece-{i}\n".encode()))
                await asyncio.sleep(0.001)
            await self._send(conn, writer, h11.EndOfMessage())
            return True
        if path == "/eof":
            await body()
            writer.write(b"HTTP/1.1 200 OK\r\nX-Release: %s\r\n\r\n" % self.release.encode())
            writer.write(b"until the end\n" * 100)
            await writer.drain()
            return False
        if path.startswith("/status/"):
            status = int(path.removeprefix("/status/"))
            if status in (204, 304):
                await body()
                await self._send(conn, writer, h11.Response(status_code=status, headers=base))
                await self._send(conn, writer, h11.EndOfMessage())
                return True
            return await simple(status, f"status {status}\n".encode(), [])
        if path == "/slow":
            await asyncio.sleep(float(query.get("s", "1")))
            return await simple(200, f"{self.release} slow\n".encode(), [])
        if path == "/ws":
            await body()
        if path == "/ws" and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
            await self._send(
                conn,
                writer,
                h11.InformationalResponse(
                    status_code=101,
                    headers=[*base, ("Upgrade", "echo"), ("Connection", "Upgrade")],
                ),
            )
            rest, _ = conn.trailing_data
            if rest:
                writer.write(rest)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            return False
        return await simple(200, f"{self.release}\n".encode(), [])


@contextlib.contextmanager
def backends(*releases: str) -> Iterator[list[Backend]]:
    started = [Backend(release).start() for release in releases]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()
