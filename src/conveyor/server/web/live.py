"""Server-sent events that keep a page live: fragments re-rendered, sent when they change.

A page subscribes with htmx's sse extension (`hx-ext="sse" sse-connect=URL`) and
names, per element, the event that replaces it (`sse-swap="hosts"`). The server
side is one loop per connection: it renders the fragments (in a thread: they
read the database), sends those whose HTML changed, and ends when the client
goes, when the server stops, or after a while (the browser reconnects by itself,
which also bounds what one connection can hold on to).

Append-only content (a step's log) is sent by `appender` instead: each event says
where the page stands after it, so a reconnecting page resumes exactly there.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.server.busy import is_busy
from conveyor.store.outage import is_unavailable

EVERY = 0.25  # seconds between two renders: a change is on screen within about this
LIFETIME = 300.0  # seconds a connection lives before the browser is asked to reconnect

Render = Callable[[], dict[str, str]]
_LINE_END = re.compile(r"\r\n|\r|\n")


def event(name: str, data: str, id: str | None = None) -> str:
    """One SSE message; every line of the data gets its own `data:` field.

    Split on the line ends SSE knows (and only those), keeping a trailing one: a browser
    joins the fields with "\\n", so appended log text keeps its last line break.
    """
    lines = _LINE_END.split(data)
    head = f"id: {id}\n" if id else ""
    return head + f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


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
            try:
                fragments = await run_in_threadpool(render)
            except Exception as exc:
                if not (is_busy(exc) or is_unavailable(exc)):
                    raise
                fragments = {}  # the database is busy or away: the page keeps what it shows
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


END = "end"  # the event after which a page closes its stream (`sse-close="end"`)


@dataclass(frozen=True)
class Message:
    """One event of an append-only stream, and the cursor once the page has applied it."""

    event: str
    html: str
    # sent as the event's SSE `id:`; None for an event that moves no cursor (a fragment
    # that replaces itself can be sent twice and nothing shows twice)
    cursor: str | None = None


@dataclass
class Batch:
    """What a feed has to send now, and whether nothing will ever follow."""

    messages: list[Message] = field(default_factory=list)
    done: bool = False


Feed = Callable[[str], Batch]


def appender(request: Request, feed: Feed, start: str, every: float = EVERY) -> StreamingResponse:
    """A text/event-stream of what `feed(cursor)` says is new since `cursor`.

    A cursor is the feed's own string for "the page has everything up to here". The
    page passes the one it was rendered at (`start`, in the stream's URL); each message
    carries its successor as the SSE `id`, and a browser that reconnects (the stream ends
    after LIFETIME, or the network blinked) sends the last one it applied as
    `Last-Event-ID`, which takes the place of `start`: nothing is sent twice, nothing is
    lost. When the feed is done the stream sends END, which closes it for good.
    """
    cursor = request.headers.get("last-event-id") or start

    async def messages() -> AsyncIterator[str]:
        nonlocal cursor
        deadline = time.monotonic() + LIFETIME
        notifier = request.app.state.notifier
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline and not notifier.closed:
            if await request.is_disconnected():
                return
            try:
                batch = await run_in_threadpool(feed, cursor)
            except Exception as exc:
                if not (is_busy(exc) or is_unavailable(exc)):
                    raise
                batch = Batch()  # the database is busy or away: try again at the next tick
            for message in batch.messages:
                if message.cursor is not None:
                    cursor = message.cursor
                yield event(message.event, message.html, message.cursor)
            if batch.done:
                yield event(END, "", cursor)
                return
            await asyncio.sleep(every)

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


__all__ = ["END", "EVERY", "Batch", "Feed", "Message", "appender", "event", "stream"]
