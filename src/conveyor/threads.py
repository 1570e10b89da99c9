"""The server's threads: database work off the event loop, and waking the loop from a thread.

The engines (runs, deployments, notifications) are asyncio tasks, and SQLAlchemy
with SQLite is blocking: a query, a wait for a pool connection or for SQLite's
write lock would stop every other task and every async route while it lasts (and
if the connection it waits for is held by a request that waits for the loop, for
ever). So each of their database blocks runs in a thread of `BACKGROUND`, a small
executor of its own whose size the background connection pool matches
(`store.db.Capacity`): a background block always finds a thread and a connection,
whatever the requests do.

Code in those threads (and in the request threads) wakes the engines and the
agents' long-polls; an asyncio.Event may only be set on its loop's thread, so
`Wakeup` hands the set over to the loop when called from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from anyio import CapacityLimiter, to_thread

BACKGROUND_THREADS = 8  # the engines' database blocks running at once (a connection each)
# the agents' requests (long-polls, reports) have threads of their own: readers of the API,
# however many, cannot delay a host's report until it looks offline and fails a deployment
AGENT_THREADS = 8

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_agent_lane = CapacityLimiter(AGENT_THREADS)
_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(BACKGROUND_THREADS, thread_name_prefix="conveyor-db")
        return _executor


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` (a blocking database block) in a background thread and wait for it."""
    loop = asyncio.get_running_loop()
    # with the caller's context variables (a deployment's lease fence: store/leases.py)
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(_background(), call)


async def in_agent_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking database block in one of the agents' own threads."""
    return await to_thread.run_sync(fn, *args, limiter=_agent_lane)


def offloaded(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Make a blocking function (a short transaction) awaitable, run by `in_thread`."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await in_thread(fn, *args, **kwargs)

    return run


class Wakeup:
    """An asyncio.Event that any thread may set (the engines' and long-polls' wake)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        call_on_loop(self._loop, self._event.set)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._event.wait()

    def bind(self) -> None:
        """Remember the running loop (before any thread may set this)."""
        self._loop = asyncio.get_running_loop()


def call_on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], object]) -> None:
    """Call `fn` now if on `loop`'s thread (or no loop is known yet), else on the loop soon."""
    if loop is None or _running_loop() is loop:
        fn()
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
        loop.call_soon_threadsafe(fn)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = [
    "AGENT_THREADS",
    "BACKGROUND_THREADS",
    "Wakeup",
    "call_on_loop",
    "in_agent_thread",
    "in_thread",
    "offloaded",
]
