"""The agents' requests answered in bulk: long-polls' reads and reports, a batch at a time.

A deployment step for a thousand hosts wakes a thousand long-polls at once. Each one
reading its own host, its apps, its flags (several queries, then the answer's JSON)
in one of the agents' few threads took seconds for them all; here the polls a change
woke queue their asks, and one task reads the desired state of every host waiting in
a few queries (`read_desired`), serializes each answer once, and hands it back.
Reports are queued alike and written by one writer, in one transaction every
`REPORT_INTERVAL` at most (at once when none was written for that long): a thousand
agents reporting every few seconds are a few transactions a second, not hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from fastapi import HTTPException
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, load_only, selectinload, sessionmaker

from conveyor.deploy.desired import FlagsRead, desired_state
from conveyor.protocol import ObservedState
from conveyor.store.models import Host, HostApp, utcnow
from conveyor.store.outage import OUTAGE, is_unavailable

log = logging.getLogger("conveyor.server")

# a long-poll notes its host seen (a write) only if it was not seen this recently: the
# reports (every 2 s) keep it fresh (hosts go offline after 15 s)
SEEN_FRESH = timedelta(seconds=5)
READ_BATCH = 250  # hosts read in one transaction (their answers go out as it ends)
REPORT_INTERVAL = 0.5  # seconds between two report transactions, at most two a second
REPORT_BATCH = 1000  # reports written in one transaction (more waiting: at once)
YIELD_FOR = 2.0  # seconds reports wait for a wave of long-polls' reads, at most
IN_CLAUSE = 500  # names in one IN (…) (SQLite's older builds allow 999 parameters)
RETRIED_STATES = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure

A = TypeVar("A")
R = TypeVar("R")
Runner = Callable[..., Awaitable[Any]]


@dataclass
class DesiredAsk:
    """One long-poll's read: its host's answer if newer than `after` (or `final`)."""

    host: str
    after: int
    final: bool  # the poll's wait is over (or the server stops): answer whatever it is
    first: bool  # the request's first read: note the host seen


@dataclass
class Answer:
    """A read's outcome: the answer's JSON (None: not newer, wait on), and whether the
    host is to be noted seen (its first read, not seen lately: a write, by the reports')."""

    body: bytes | None
    seen: bool = False


@dataclass
class Report:
    """A host's observed state, or (body None) only that it was seen now."""

    host: str
    body: ObservedState | None


class RevokedAgent(HTTPException):
    def __init__(self) -> None:
        super().__init__(401, "agent credential revoked")


def _chunks(items: Sequence[str], size: int = IN_CLAUSE) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def read_desired(session: Session, asks: Sequence[DesiredAsk]) -> list[Answer | Exception]:
    """Each ask's answer, in order (reads only): the host's desired state as its JSON
    (what `desired_state` gives, as the route serializes it) when its generation is newer
    than `after` or the ask is final, else None; or the exception for that host alone
    (revoked: RevokedAgent)."""
    names = sorted({a.host for a in asks})
    hosts: dict[str, Host] = {}
    for chunk in _chunks(names):
        rows = session.scalars(
            select(Host)
            .where(Host.name.in_(chunk))
            .options(
                # not what the agents report (observed: kilobytes a host, read for nothing)
                load_only(Host.name, Host.state, Host.generation, Host.checks, Host.last_seen),
                selectinload(Host.apps).joinedload(HostApp.app),
            )
        ).all()
        hosts.update((h.name, h) for h in rows)
    now = utcnow()
    flags_read: FlagsRead = {}
    answers: dict[str, bytes | Exception] = {}
    found: list[Answer | Exception] = []
    for ask in asks:
        host = hosts.get(ask.host)
        if host is None or host.state != "enrolled":
            found.append(RevokedAgent())
            continue
        # seen when it asks, not while its poll waits: a cut-off host goes offline
        seen = ask.first and (host.last_seen is None or now - host.last_seen > SEEN_FRESH)
        if host.generation <= ask.after and not ask.final:
            found.append(Answer(None, seen))
            continue
        if host.name not in answers:
            try:
                state = desired_state(session, host, flags_read)
                answers[host.name] = state.model_dump_json(by_alias=True).encode()
            except Exception as exc:  # this host's answer only (a release it cannot run…)
                answers[host.name] = exc
        answer = answers[host.name]
        found.append(answer if isinstance(answer, Exception) else Answer(answer, seen))
    return found


class Later:
    """An item to handle in a later batch (its host's row is locked by another writer)."""


def write_reports(session: Session, reports: Sequence[Report]) -> list[Exception | Later | None]:
    """Record the reports (one transaction): each host's observed state (its last
    report's), seen now, and its applied generation when it converged. A host gone
    meanwhile: RevokedAgent.

    A host whose row another transaction holds (a deployment step writing its desired
    state, another server's batch) is left for a later batch (Later), not waited for:
    this batch waits for no lock while it holds others, so it is in no deadlock."""
    names = sorted({r.host for r in reports})
    ids: dict[str, int] = {}
    for chunk in _chunks(names):
        locks = session.execute(
            select(Host.id, Host.name)
            .where(Host.name.in_(chunk))
            .order_by(Host.id)
            .with_for_update(skip_locked=True)
        )
        ids.update((name, id_) for id_, name in locks)
    locked: set[str] = set()  # skipped (held by another transaction), not gone
    for chunk in _chunks([n for n in names if n not in ids]):
        locked.update(session.scalars(select(Host.name).where(Host.name.in_(chunk))))
    now = utcnow()
    values: dict[str, dict[str, object]] = {}
    found: list[Exception | Later | None] = []
    for report in reports:  # in arrival order: a host's later report wins
        if report.host not in ids:
            found.append(Later() if report.host in locked else RevokedAgent())
            continue
        row = values.setdefault(report.host, {"id": ids[report.host], "last_seen": now})
        if report.body is not None:
            row["observed"] = report.body.model_dump_json()
            if report.body.converged:
                row["applied_generation"] = report.body.generation
        found.append(None)
    # an executemany per set of columns, by primary key (rows already locked: any order)
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row in values.values():
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for shaped in shapes.values():
        session.execute(update(Host), shaped)
    session.commit()
    return found


def _retried(fn: Callable[[], R]) -> R:
    """Call `fn` (a transaction), and once more if the database chose it as a deadlock's
    or a serialization failure's victim (it rolled back: nothing was written)."""
    try:
        return fn()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) not in RETRIED_STATES:
            raise
        log.info("retrying a batch once: %s", exc.orig)
        return fn()


@dataclass
class _Pending(Generic[A, R]):
    item: A
    future: asyncio.Future[R]


@dataclass
class Batcher(Generic[A, R]):
    """Items queued by requests, handled a batch at a time by one task: `handle` (in a
    thread) answers every item of a batch, an exception for one item fails that item's
    request; an exception for the batch fails them all with `failed` (503)."""

    name: str
    handle: Callable[[Sequence[A]], Sequence[R | Exception | Later]]
    run: Runner  # how `handle` runs off the loop (the agents' threads)
    size: int
    interval: float = 0.0  # seconds from one batch's start to the next one's, at least
    failed: str = "the server could not handle the request now; try again"
    # another batcher whose waves go first: this one waits while that one has a whole
    # batch waiting (up to YIELD_FOR seconds), e.g. reports while a thousand woken
    # long-polls are being answered (at rest, the polls' few reads do not hold them up)
    yield_to: Batcher[Any, Any] | None = None
    _queue: list[_Pending[A, R]] = field(default_factory=list)
    _wake: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: A) -> R:
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop or self._task.done():
            # started by the first request of this loop (a test may run several loops)
            self._loop, self._wake, self._queue = loop, asyncio.Event(), []
            self._task = loop.create_task(self._serve(), name=self.name)
        pending: _Pending[A, R] = _Pending(item, loop.create_future())
        self._queue.append(pending)
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    @property
    def swamped(self) -> bool:
        """A batch or more waits."""
        return len(self._queue) >= self.size

    def post(self, item: A) -> None:
        """Queue an item whose outcome nobody waits for (a failure is logged, not raised)."""
        task = asyncio.ensure_future(self.submit(item))
        task.add_done_callback(_consumed)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(HTTPException(503, "the server is stopping"))
        self._queue = []

    async def _serve(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            await wake.wait()
            wake.clear()
            while self._queue:
                started = time.monotonic()
                while self.yield_to is not None and self.yield_to.swamped:
                    if time.monotonic() - started > YIELD_FOR:
                        break
                    await asyncio.sleep(0.01)
                batch, self._queue = self._queue[: self.size], self._queue[self.size :]
                await self._handle(batch)
                rest = self.interval - (time.monotonic() - started)
                if rest > 0 and len(self._queue) < self.size:
                    await asyncio.sleep(rest)

    async def _handle(self, batch: list[_Pending[A, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a request gone: nobody waits
        if not live:
            return
        try:
            started = time.monotonic()
            results = await self.run(self.handle, [p.item for p in live])
            took = (time.monotonic() - started) * 1000
            log.debug("%s: a batch of %d in %.0f ms", self.name, len(live), took)
        except asyncio.CancelledError:
            for pending in live:
                pending.future.cancel()
            raise
        except Exception as exc:
            if is_unavailable(exc):
                # the database away: each request answered as any other then is (busy.py:
                # 503, Retry-After), the outage logged once for all, not once a batch
                OUTAGE.failed(exc, self.name)
                results = [exc for _ in live]
            else:
                log.warning("%s: a batch of %d failed: %s", self.name, len(live), exc, exc_info=exc)
                results = [HTTPException(503, self.failed) for _ in live]
        later = []
        for pending, result in zip(live, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Later):
                later.append(pending)
            elif isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        self._queue[:0] = later  # first in the next batch


def _consumed(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a posted item failed: %s", task.exception())


class AgentDesk:
    """This server's batchers of the agents' long-poll reads and reports."""

    def __init__(self, sessions: sessionmaker[Session], run: Runner) -> None:
        def read(asks: Sequence[DesiredAsk]) -> list[Answer | Exception]:
            with sessions() as session:
                return read_desired(session, asks)

        def write(reports: Sequence[Report]) -> list[Exception | Later | None]:
            def once() -> list[Exception | Later | None]:
                with sessions() as session:
                    return write_reports(session, reports)

            return _retried(once)

        self.reads: Batcher[DesiredAsk, Answer] = Batcher("desired-reads", read, run, READ_BATCH)
        self.reports: Batcher[Report, None] = Batcher(
            "reports",
            write,
            run,
            REPORT_BATCH,
            REPORT_INTERVAL,
            failed="the report was not recorded (the database failed): send it again",
            yield_to=self.reads,
        )

    async def stop(self) -> None:
        await self.reads.stop()
        await self.reports.stop()
