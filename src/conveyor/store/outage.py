"""The database as this process last found it: answering, or away since when and why.

PostgreSQL may go away under a running server (restarted, failed over, the network
cut) and come back. Meanwhile nothing that needs it can be done, and nothing is
half-written: each change is one transaction, rolled back when its connection
breaks. What the server does instead:

- a request that needed the database is answered 503 with Retry-After and says so
  (server/busy.py), never 500;
- each engine loop (deployments, runs, notifications, ...) waits and tries again,
  0.5 s doubling up to 5 s (`backoff`), rather than failing its work or spinning;
- one warning when the database goes away and one when it is back (`database
  unavailable`, `database back` with how long), not one per loop and tick;
- `/healthz` says the database is unavailable and since when (its status 200:
  the process serves what it can, and another server on the same database is no better
  off, so a balancer should keep it).

One `OUTAGE` per process: a process has one database. Whoever finds the database
answering again (an engine loop's turn, the cluster's listening connection) says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("conveyor.store")

FIRST_WAIT = 0.5  # seconds a loop waits after its first failed turn
MOST_WAIT = 5.0  # and at most, however long the database stays away
# seconds after the database came back during which no other server is judged dead: a
# restarted PostgreSQL lost every server's liveness lock, which each takes again once
# its listening connection is back (store/cluster.py: within MOST_WAIT)
SETTLE = 2 * MOST_WAIT

# a lock waited out or a deadlock broken: the database answers, it is busy (server/busy.py)
LOCKED = (
    "database is locked",
    "database table is locked",
    "canceling statement due to lock timeout",
    "deadlock detected",
)


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "busy, try again" rather than a fault."""
    if isinstance(exc, PoolTimeout):
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(exc, DBAPIError) and any(m in str(orig) for m in LOCKED)


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database cannot be reached (refused, gone mid-query,
    shutting down or starting up), as opposed to busy or a fault of the statement."""
    if is_busy(exc):
        return False
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, psycopg.Error):
            return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
        # SQLite: the file cannot be opened or written (a disk gone, full, read-only)
        return type(orig).__name__ == "OperationalError" and any(
            m in str(orig) for m in ("unable to open", "disk I/O error", "readonly database")
        )
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def backoff(attempt: int) -> float:
    """Seconds to wait after the `attempt`-th failed turn in a row (1, 2, ...)."""
    return float(min(MOST_WAIT, FIRST_WAIT * 2 ** max(0, attempt - 1)))


def reason(exc: BaseException) -> str:
    """The driver's one-line reason (libpq's spans lines), without SQLAlchemy's links."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:300] or type(orig).__name__


class Outage:
    """Whether the database answers, as last found; waits for the loops that found it away."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None  # monotonic time it was first found away
        self.since_wall: float | None = None
        self.why = ""
        self.back_at: float | None = None  # monotonic time it was last found back
        self._attempts: dict[str, int] = {}

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, where: str) -> None:
        """The database was found away (by `where`): logged once for the whole outage."""
        with self._lock:
            first = self.since is None
            if first:
                self.since, self.since_wall = self._clock(), time.time()
            self.why = reason(exc)
        if first:
            log.warning("database unavailable", extra={"where": where, "error": self.why})

    def turn_failed(self, exc: BaseException, where: str) -> float | None:
        """For a loop whose turn raised `exc`: seconds to wait before the next turn when the
        database is away (noted, logged once), or None for any other error (the caller's
        to log: a bug)."""
        if not is_unavailable(exc):
            return None
        self.failed(exc, where)
        with self._lock:
            attempt = self._attempts[where] = self._attempts.get(where, 0) + 1
        return backoff(attempt)

    def answered(self) -> None:
        """The database answered (a loop's turn went through): the outage, if any, is over."""
        if self.since is None and not self._attempts:
            return  # the usual case: no lock taken
        with self._lock:
            since, self.since, self.since_wall = self.since, None, None
            self._attempts.clear()
            if since is not None:
                self.back_at = self._clock()
        if since is not None:
            log.warning("database back", extra={"down_for": round(self._clock() - since, 1)})

    def settling(self) -> bool:
        """Whether the database came back less than SETTLE seconds ago (or is away): the
        other servers' liveness locks say nothing yet."""
        back = self.back_at
        return self.since is not None or (back is not None and self._clock() - back < SETTLE)

    def health(self) -> dict[str, str]:
        """What `/healthz` adds while the database is away (nothing when it answers)."""
        since = self.since
        if since is None:
            return {}
        at = time.strftime("%H:%M:%S", time.gmtime(self.since_wall or time.time()))
        return {
            "status": "degraded",
            "database": "unavailable",
            "detail": (
                f"the database has not answered since {at} UTC ({self._clock() - since:.0f} s; "
                "the server's log says why): deployments and runs wait for it"
            ),
        }


OUTAGE = Outage()

__all__ = ["OUTAGE", "SETTLE", "Outage", "backoff", "is_busy", "is_unavailable", "reason"]
