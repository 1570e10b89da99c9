"""The access log: uvicorn's line for each response, made cheaply and written in batches.

uvicorn's own access log costs a log record, a formatter and a write to stderr for
every response, on the event loop: under load, a fifth of the loop's time. Here the
same JSON line (logs.JsonFormatter's shape, logger "uvicorn.access", uvicorn's
message) is made with one f-string and the lines of `every` seconds are written
together; `flush` writes what is pending (at shutdown).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from typing import TextIO

from starlette.types import Message, Scope, Send

FLUSH_EVERY = 0.2  # seconds a line may wait to be written with others
MAX_PENDING = 1000  # lines: written at once beyond


def line(scope: Scope, status: int, at: float) -> str:
    """uvicorn's access line for a response, as logs.JsonFormatter writes a record."""
    client = scope.get("client")
    who = f"{client[0]}:{int(client[1])}" if client else ""
    path = urllib.parse.quote(scope["path"])
    if scope.get("query_string"):
        path = f"{path}?{scope['query_string'].decode('ascii')}"
    message = f'{who} - "{scope["method"]} {path} HTTP/{scope["http_version"]}" {status}'
    ts = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return (
        f'{{"ts": "{ts}", "level": "info", "logger": "uvicorn.access", '
        f'"msg": {json.dumps(message)}}}\n'
    )


class AccessLog:
    """Access lines, written to `stream` in batches from the event loop."""

    def __init__(self, stream: TextIO | None = None, every: float = FLUSH_EVERY) -> None:
        self.stream = stream
        self.every = every
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, scope: Scope, status: int) -> None:
        loop = asyncio.get_running_loop()
        self._pending.append(line(scope, status, time.time()))
        if len(self._pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.every, self.flush)

    def watch(self, scope: Scope, send: Send) -> Send:
        """`send`, adding the line as the response starts (as uvicorn does)."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.add(scope, message["status"])
            await send(message)

        return sending

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: as logging's handlers, never fail a request for it


__all__ = ["AccessLog", "line"]
