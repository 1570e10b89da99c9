"""A small HTTP/1.1 server loop on h11, for the router's admin socket and the agent's
Prometheus exporter: keep-alive connections, one request at a time on each.

A handler gets the method, the target and the whole body, and returns a `Reply`; the
loop frames it (Content-Length, no body for HEAD) and reads the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain"


Handler = Callable[[Request], Awaitable[Reply]]


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler, max_body: int
) -> None:
    """Answer the requests of one connection until either side ends it."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await read_request(conn, reader, max_body)
            if request is None:
                break
            reply = await handle(request)
            headers = [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
            ]
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            if request.method != "HEAD":
                writer.write(conn.send(h11.Data(data=reply.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, max_body: int
) -> Request | None:
    """The next request, body included; None once the client is gone."""
    method = target = ""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            method, target = event.method.decode(), event.target.decode()
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return Request(method, target, bytes(body))
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


__all__ = ["Handler", "Reply", "Request", "read_request", "serve_connection"]
