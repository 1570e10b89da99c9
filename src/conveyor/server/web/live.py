"""Server-sent events that keep a page live: fragments re-rendered, sent when they change.

A page subscribes with htmx's sse extension (`hx-ext="sse" sse-connect=URL`) and
names, per element, the event that replaces it (`sse-swap="hosts"`). The server
side is one loop per connection: it renders the fragments (in a thread: they
read the database), sends those whose HTML changed, and ends when the client
goes, when the server stops, or after a while (the browser reconnects by itself,
which also bounds what one connection can hold on to).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

EVERY = 0.25  # seconds between two renders: a change is on screen within about this
LIFETIME = 300.0  # seconds a connection lives before the browser is asked to reconnect

Render = Callable[[], dict[str, str]]


def event(name: str, data: str) -> str:
    """One SSE message; every line of the data gets its own `data:` field."""
    lines = data.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def stream(request: Request, render: Render, every: float = EVERY) -> StreamingResponse:
    """A text/event-stream that sends each fragment `render` returns whenever it changes."""

    async def messages() -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        deadline = time.monotonic() + LIFETIME
        notifier = request.app.state.notifier
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline and not notifier.closed:
            if await request.is_disconnected():
                return
            fragments = await run_in_threadpool(render)
            for name, html in fragments.items():
                if sent.get(name) != html:
                    sent[name] = html
                    yield event(name, html)
            await asyncio.sleep(every)

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def appender(request: Request, step: Callable[[], list[tuple[str, str]]]) -> StreamingResponse:
    """A text/event-stream of (event, html) pairs to append: `step` returns what is new."""

    async def messages() -> AsyncIterator[str]:
        deadline = time.monotonic() + LIFETIME
        notifier = request.app.state.notifier
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline and not notifier.closed:
            if await request.is_disconnected():
                return
            for name, html in await run_in_threadpool(step):
                yield event(name, html)
            await asyncio.sleep(EVERY)

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


__all__ = ["EVERY", "appender", "event", "stream"]
