"""Delivering pending notifications with Apprise, off the event loop, each target on its own.

The Courier is an asyncio task in the server. It picks the pending rows that are
due and sends each in its own thread with a deadline, so a dead endpoint (one
that refuses, or accepts and never answers) costs that row its retries and
nothing else: no deployment, no other target waits for it. Each attempt is
recorded before it is made (a lease), so a server killed mid-send retries later
rather than forgetting the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.pipeline.masking import Masker
from conveyor.store.models import Notification, utcnow
from conveyor.store.outage import OUTAGE
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.notify")

RETRY_ENV = "CONVEYOR_NOTIFY_RETRY"  # seconds between attempts, e.g. "5,15,40"
TIMEOUT_ENV = "CONVEYOR_NOTIFY_TIMEOUT"  # seconds one attempt may take
IN_FLIGHT = 32  # rows being sent at once
POLL = 1.0  # seconds between looks at the table when nothing wakes the courier
ERROR_WIDTH = 500

# what to send: (url, title, body, notify type, timeout) -> None when sent, else the error
Sender = Callable[[str, str, str, str, float], str | None]


@dataclass(frozen=True)
class Policy:
    """How long one attempt may take, and the waits between attempts."""

    timeout: float = 10.0
    backoff: tuple[float, ...] = (5.0, 15.0, 40.0)  # four attempts over about a minute

    @property
    def attempts(self) -> int:
        return len(self.backoff) + 1

    def retry_after(self, attempts_made: int) -> float | None:
        """Seconds to wait before the next attempt, or None: give up."""
        if attempts_made > len(self.backoff):
            return None
        return self.backoff[attempts_made - 1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Policy:
        policy = cls()
        timeout = environ.get(TIMEOUT_ENV)
        retry = environ.get(RETRY_ENV)
        try:
            if timeout:
                policy = cls(float(timeout), policy.backoff)
            if retry is not None:
                waits = tuple(float(x) for x in retry.split(",") if x.strip())
                policy = cls(policy.timeout, waits)
        except ValueError:
            log.warning(
                "ignoring a malformed notification policy",
                extra={TIMEOUT_ENV: timeout, RETRY_ENV: retry},
            )
            return cls()
        return policy


def notify_type(event: str) -> str:
    """Apprise's type for a message of these kinds (it picks colours and icons)."""
    kinds = set(event.split(","))
    if "failure" in kinds:
        return "failure"
    if "success" in kinds:
        return "success"
    if "announce" in kinds:
        return "info"  # a deployment about to start, or how it went
    return "warning"  # an approval waiting, a rollback


class Courier:
    """Sends pending notifications, each target independently, retrying with backoff."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: Policy | None = None,
        send: Sender | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy or Policy.from_env()
        self.send: Sender = send or send_apprise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._prepared = False

    def wake(self) -> None:
        """Look for new rows now (callable from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self._stopping:
            away = None
            try:
                await self._start_due()
            except Exception as exc:
                away = OUTAGE.turn_failed(exc, "notification courier")
                if away is None:
                    log.exception("notification courier error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(away or 0, POLL))

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=5)

    async def _start_due(self) -> None:
        free = IN_FLIGHT - len(self._tasks)
        if free <= 0:
            return
        due = await in_thread(self._due, free, list(self._tasks))
        if due and not self._prepared:
            # Apprise loads its plugins on first use (most of a second of CPU, seconds on a
            # busy host): before the first message, in a thread, and only in a server that
            # has a message to send
            await asyncio.to_thread(_prepare_apprise)
            self._prepared = True
        for row_id in due:
            task = asyncio.create_task(self._deliver(row_id), name=f"notify-{row_id}")
            self._tasks[row_id] = task
            task.add_done_callback(functools.partial(self._done, row_id))

    def _due(self, free: int, busy: list[int]) -> list[int]:
        """The pending rows whose attempt is due, not being sent already."""
        now = utcnow()
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Notification.id)
                    .where(
                        Notification.state == "pending",
                        or_(
                            Notification.next_attempt_at.is_(None),
                            Notification.next_attempt_at <= now,
                        ),
                        Notification.id.not_in(busy),
                    )
                    .order_by(Notification.id)
                    .limit(free)
                ).all()
            )

    def _done(self, row_id: int, _task: object = None) -> None:
        self._tasks.pop(row_id, None)
        if self._wake is not None:
            self._wake.set()

    async def _deliver(self, row_id: int) -> None:
        policy = self.policy
        deadline = policy.timeout + 1.0  # Apprise's own socket timeouts come first
        leased = await in_thread(self._lease, row_id, deadline)
        if leased is None:
            return
        url, title, body, event, attempt = leased
        shown = shown_url(url)
        error = await self._attempt(url, title, body, notify_type(event), deadline)
        await in_thread(self._record, row_id, shown, event, attempt, url, error)

    def _lease(self, row_id: int, deadline: float) -> tuple[str, str, str, str, int] | None:
        """Count the attempt before making it: (url, title, body, event, attempt), or None."""
        policy = self.policy
        with self.sessions() as session:
            # locked, and due again: another server sharing the database may have taken it
            row = session.get(Notification, row_id, with_for_update=True)
            if row is None or row.state != "pending":
                return None
            if row.next_attempt_at is not None and row.next_attempt_at > utcnow():
                return None
            row.attempts += 1
            # the lease: if this process dies during the attempt, the next one retries then
            row.next_attempt_at = utcnow() + timedelta(
                seconds=deadline + (policy.retry_after(row.attempts) or 0)
            )
            session.commit()
            return row.target, row.title, row.body, row.event, row.attempts

    def _record(
        self, row_id: int, shown: str, event: str, attempt: int, url: str, error: str | None
    ) -> None:
        """What the attempt came to: sent, retried later, or given up."""
        policy = self.policy
        with self.sessions() as session:
            row = session.get(Notification, row_id)
            if row is None:
                return
            where = {"notification": row_id, "target": shown, "event": event, "attempt": attempt}
            if error is None:
                row.state, row.sent_at, row.next_attempt_at = "sent", utcnow(), None
                row.last_error = None
                session.commit()
                log.info("notification sent", extra=where)
                return
            error = scrub(error, url)[:ERROR_WIDTH]
            row.last_error = error
            wait = policy.retry_after(attempt)
            if wait is None:
                row.state, row.next_attempt_at = "failed", None
                session.commit()
                log.error("notification failed, giving up", extra=where | {"error": error})
                return
            row.next_attempt_at = utcnow() + timedelta(seconds=wait)
            session.commit()
            log.warning(
                "notification attempt failed",
                extra=where | {"error": error, "retry_in": wait},
            )

    async def _attempt(
        self, url: str, title: str, body: str, kind: str, deadline: float
    ) -> str | None:
        """One send in a thread of its own; the thread is abandoned if it overstays."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[str | None] = loop.create_future()
        timeout = self.policy.timeout

        def settle(result: str | None) -> None:
            if not outcome.done():
                outcome.set_result(result)

        def work() -> None:
            try:
                result = self.send(url, title, body, kind, timeout)
            except Exception as exc:  # a plugin bug is one more failed attempt
                result = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, result)

        threading.Thread(target=work, name="notify-send", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(outcome), timeout=deadline)
        except TimeoutError:
            return f"no answer within {deadline:g} s"


# -- Apprise -------------------------------------------------------------------


class _ThreadLog(logging.Handler):
    """Keeps Apprise's log records per sending thread: the reason a send returned False."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: dict[int, list[logging.LogRecord]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = self.records.get(record.thread or 0)
        if found is not None:
            found.append(record)


_CAPTURE = _ThreadLog()
_PREPARING = threading.Lock()


def _prepare_apprise() -> None:
    import apprise

    logger = logging.getLogger("apprise")
    with _PREPARING:
        if _CAPTURE in logger.handlers:
            return
        # Apprise loads its plugins on first use (a second or two): before the first message
        apprise.Apprise.instantiate("json://localhost")
        # its records become the `error` of our own log lines, not lines of their own
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(_CAPTURE)


def send_apprise(url: str, title: str, body: str, kind: str, timeout: float) -> str | None:
    """Send one message to one Apprise URL; None when sent, else what went wrong."""
    import apprise
    from apprise.url import URLBase

    _prepare_apprise()
    me = threading.get_ident()
    _CAPTURE.records[me] = []
    try:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            return "not a usable Apprise URL (unknown service, or a part of it is malformed)"
        # an endpoint that accepts and never answers must not hold the attempt forever
        if plugin.socket_connect_timeout == URLBase.socket_connect_timeout:
            plugin.socket_connect_timeout = timeout / 2
        if plugin.socket_read_timeout == URLBase.socket_read_timeout:
            plugin.socket_read_timeout = timeout / 2
        if plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(kind)):
            return None
        return _explain(_CAPTURE.records.get(me, []))
    finally:
        _CAPTURE.records.pop(me, None)


def _explain(records: list[logging.LogRecord]) -> str:
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    details = [
        m.removeprefix("Socket Exception: ")
        for r in records
        if (m := r.getMessage()).startswith("Socket Exception")
    ]
    text = " ".join(warnings[-2:]) or "the service did not accept the message"
    if details:
        text += f" ({details[-1]})"
    return text


def shown_url(url: str) -> str:
    """The URL with its secrets hidden (Apprise's privacy form), for logs and the API."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url)
        if plugin is not None:
            return str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
    except Exception:  # a display helper must not fail a listing
        log.debug("no privacy form for a notification URL", exc_info=True)
    scheme = url.split("://", 1)[0]
    return f"{scheme}://…"


def scrub(text: str, url: str) -> str:
    """Hide the parts of an Apprise URL that may be secrets (tokens in paths, passwords)."""
    parts = urlsplit(url)
    secrets = [parts.password or "", parts.username or ""]
    host = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
    if "." not in host and ":" not in host and host != "localhost":
        secrets.append(host)  # slack://TOKEN/…: no host name, a credential
    secrets += [unquote(seg) for seg in parts.path.split("/")]
    secrets += parts.path.split("/")
    secrets += [v for _, v in parse_qsl(parts.query)]
    text = re.sub(r"with url: \S+", "with url: …", text)
    return Masker(s for s in secrets if s)(text)
