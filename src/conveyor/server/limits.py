"""Refusing oversized request bodies (413) before any handler reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 25 * 1024 * 1024
MAX_ARTIFACT = 4 * 1024 * 1024 * 1024  # a runner's artifact upload (streamed to disk)


def limit_for(path: str, default: int) -> int:
    """The body limit of a request path: a runner's artifact upload may be larger."""
    if path.startswith("/api/runner/runs/") and path.endswith("/artifact"):
        return MAX_ARTIFACT
    return default


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(str(scope.get("path", "")), self.limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if too_big:
                await self._refuse(send, 413, self._message())
                return
            await self.app(scope, receive, send)
            return
        # chunked: read up to the limit here, then replay it to the app
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._refuse(send, 413, self._message())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit // (1024 * 1024)} MB"

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
