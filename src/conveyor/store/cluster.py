"""Several servers on one PostgreSQL database: who is alive, and wake-ups across servers.

Each server holds, for as long as its process lives, a session-level advisory lock
numbered by a random id of its own, on a connection of its own (the *liveness lock*):
PostgreSQL releases it the moment that connection closes, so a server killed with
-9 is seen dead by the others at once (store/leases.py then takes its leases over
without waiting for their expiry).

The same connection LISTENs on `conveyor_desired`. A server that changed desired
state sends one NOTIFY per batch of hosts (`publish`, from a thread of its own so a
request or an engine never waits for it); every other server wakes the long-polls
of those hosts. A notification lost with a connection is caught up with: after a
reconnection every long-poll re-reads, and long-polls re-read every few seconds
anyway (server/api/agents.py REREAD).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Collection

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from conveyor.store.leases import Holder
from conveyor.store.outage import OUTAGE, backoff, is_unavailable

log = logging.getLogger("conveyor.cluster")

CHANNEL = "conveyor_desired"
SERVERS = 0x434F4E57  # the first key of the liveness locks ("CONW"); the second: the id
MAX_PAYLOAD = 7900  # NOTIFY takes at most 8000 bytes; more hosts than fit: "*" (all)
ALL = "*"

OnChange = Callable[[list[str] | None], None]  # hosts whose desired state changed; None: all


def payload(server: int, hosts: Collection[str]) -> str:
    """One NOTIFY's text: the sender's id and the hosts, or every host when too many."""
    listed = f"{server}|{','.join(sorted(set(hosts)))}"
    return listed if len(listed.encode()) <= MAX_PAYLOAD else f"{server}|{ALL}"


def parse(text_: str) -> tuple[int | None, list[str] | None]:
    """(sender id, hosts or None for all) of a NOTIFY's text; an unreadable one: all."""
    sender, sep, rest = text_.partition("|")
    if not sep or not sender.isdigit():
        return None, None
    return int(sender), None if rest == ALL else [h for h in rest.split(",") if h]


def alive(session: Session, servers: Collection[int]) -> set[int]:
    """Which of these servers hold their liveness lock now (their process lives); all of
    them just after the database came back, before each could take its lock again."""
    if not servers:
        return set()
    if OUTAGE.settling():
        return set(servers)
    found = session.execute(
        text(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = CAST(:key AS oid) AND objsubid = 2 AND objid::bigint = ANY(:ids)"
        ),
        {"key": SERVERS, "ids": list(servers)},
    ).scalars()
    return {int(s) for s in found}


class Cluster:
    """This server's place among those sharing the database: its liveness lock, the
    wake-ups it receives (`start(on_change)`) and sends (`publish`)."""

    def __init__(self, conninfo: str, name: str) -> None:
        self.conninfo = conninfo
        self.server = random.randint(1, 2**31 - 1)
        self.holder = Holder(f"{name} pid {os.getpid()} #{self.server}"[:100], self.server)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._outbox: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._on_change: OnChange = lambda _hosts: None

    def start(self, on_change: OnChange, wait: float = 30.0) -> None:
        """Take the liveness lock and listen; returns once the lock is held."""
        self._on_change = on_change
        for target, name in ((self._listen, "cluster-listen"), (self._send, "cluster-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self.ready.wait(wait):
            log.warning("liveness lock not taken yet", extra={"waited": wait})

    def publish(self, hosts: Collection[str]) -> None:
        """Tell the other servers these hosts' desired state changed (never blocks)."""
        if hosts:
            self._outbox.put(list(hosts))

    def stop(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def _listen(self) -> None:
        first = True
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", (SERVERS, self.server))
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    if not first:  # what was sent while we were away: re-read it all
                        self._on_change(None)
                        OUTAGE.answered()
                    first, failures = False, 0
                    log.info("listening", extra={"server": self.server})
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            sender, hosts = parse(note.payload)
                            if sender != self.server:
                                self._on_change(hosts)
            except psycopg.Error as exc:
                # the database away: noted once for the whole outage (store/outage.py), and
                # tried again after 1 s doubling up to 5 s rather than every second
                failures += 1
                if is_unavailable(exc):
                    OUTAGE.failed(exc, "cluster connection")
                else:
                    log.warning("cluster connection lost", extra={"error": str(exc)})
                self._stop.wait(backoff(failures + 1))  # 1 s, 2, 4, then every 5

    def _send(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while True:
            hosts = self._outbox.get()
            if hosts is None:
                break
            batch = set(hosts)
            while not self._outbox.empty():  # what queued meanwhile goes in the same NOTIFY
                more = self._outbox.get()
                if more is None:
                    self._stop.set()
                    break
                batch |= set(more)
            try:
                conn = self._notify(conn, payload(self.server, batch))
            except psycopg.Error as exc:
                # the others' long-polls re-read within a few seconds anyway
                log.warning("wake-up not sent", extra={"error": str(exc), "hosts": len(batch)})
                if conn is not None:
                    conn.close()
                conn = None
            if self._stop.is_set():
                break
        if conn is not None:
            conn.close()

    def _notify(
        self, conn: psycopg.Connection[tuple[object, ...]] | None, text_: str
    ) -> psycopg.Connection[tuple[object, ...]]:
        """Send one NOTIFY; a kept connection found dead (the database restarted since it
        was last used) is replaced once."""
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text_))
                return conn
            except psycopg.OperationalError:
                conn.close()
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text_))
        return conn


__all__ = ["ALL", "CHANNEL", "Cluster", "alive", "parse", "payload"]
