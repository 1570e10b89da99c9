"""A busy database never wedges the server: 503 + Retry-After, /healthz from the loop.

The database is made busy for real: this test holds SQLite's write lock from its own
connection (as a backup or a second server could), so every write of the server waits.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from conveyor.store.db import database_url, make_engine, session_factory
from conveyor.store.locking import APP_LOCKS
from conveyor.store.models import App, Notification, utcnow
from tests.helpers import ServerProcess, running_server, wait_for

# generous bounds for a loaded 2-core machine; the failure they catch is a hang of 30 s+
HEALTHZ_BOUND = 2.0
REQUEST_BOUND = 10.0


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `db` (WAL: readers go on, writers wait)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def healthz_time(client: httpx.Client) -> float:
    started = time.monotonic()
    r = client.get("/healthz", timeout=30)
    assert r.status_code == 200
    return time.monotonic() - started


def test_tiny_pool_sheds_load_with_503_and_recovers(tmp_path: Path) -> None:
    env = {"CONVEYOR_DB_POOL": "2", "CONVEYOR_DB_WAIT": "1"}
    with running_server(tmp_path / "data", env) as server:
        server.add_app("shop", tmp_path / "none.git")
        client = server.http

        def write(i: int) -> httpx.Response:
            return client.post("/api/tokens", json={"name": f"t{i}", "role": "viewer"}, timeout=30)

        def read(_: int) -> httpx.Response:
            return client.get("/api/status", timeout=30)

        with write_lock(tmp_path / "data" / "conveyor.db"), ThreadPoolExecutor(24) as pool:
            started = time.monotonic()
            writes = [pool.submit(write, i) for i in range(12)]
            reads = [pool.submit(read, i) for i in range(12)]
            # every connection is taken by a write waiting for the lock: the loop is free
            probes = [healthz_time(client) for _ in range(5)]
            answers = [f.result() for f in writes + reads]
            took = time.monotonic() - started

        assert max(probes) < HEALTHZ_BOUND, probes
        assert took < REQUEST_BOUND, took
        codes = sorted({r.status_code for r in answers})
        assert set(codes) <= {200, 201, 503}, [(r.status_code, r.text) for r in answers]
        busy = [r for r in answers if r.status_code == 503]
        assert busy, codes
        assert all(r.headers.get("retry-after") == "1" for r in busy)
        assert all("busy" in r.json()["detail"] for r in busy)
        # no write went through while the lock was held
        assert all(r.status_code == 503 for r in (f.result() for f in writes))

        # the load is over: the server answers normally, nothing wedged
        assert read(0).status_code == 200
        assert write(99).status_code == 201
        assert client.get("/api/status").json()[0]["app"]["name"] == "shop"


def test_a_dashboard_page_is_told_to_come_back_as_a_page(tmp_path: Path) -> None:
    """A browser asking for a page while the database is busy gets a page saying so,
    reloading itself after Retry-After; an htmx action gets the words where its answer
    goes; the API keeps its JSON."""
    env = {"CONVEYOR_DB_POOL": "2", "CONVEYOR_DB_WAIT": "1"}
    with running_server(tmp_path / "data", env) as server:
        server.add_app("shop", tmp_path / "none.git")
        browser = httpx.Client(base_url=server.url, timeout=30, headers={"Accept": "text/html"})
        signed_in = browser.post("/login", data={"token": server.token, "next": "/"})
        assert signed_in.status_code == 303, signed_in.text

        def write(i: int) -> httpx.Response:
            body = {"name": f"t{i}", "role": "viewer"}
            return server.http.post("/api/tokens", json=body, timeout=30)

        with write_lock(tmp_path / "data" / "conveyor.db"), ThreadPoolExecutor(24) as pool:
            writes = [pool.submit(write, i) for i in range(12)]
            pages = [pool.submit(browser.get, "/?environment=production") for _ in range(6)]
            actions = [
                pool.submit(browser.get, "/", headers={"HX-Request": "true"}) for _ in range(6)
            ]
            answers = [f.result() for f in writes + pages + actions]
        assert {r.status_code for r in answers} <= {200, 201, 503}, answers
        shown = [r for r in (f.result() for f in pages) if r.status_code == 503]
        assert shown, [r.status_code for r in answers]
        for r in shown:
            assert r.headers["content-type"].startswith("text/html"), r.headers
            assert r.headers["retry-after"] == "1"
            assert '<meta http-equiv="refresh" content="1">' in r.text
            assert "the server is busy" in r.text and "<h1>Busy</h1>" in r.text
            assert 'href="/?environment=production"' in r.text  # try again: the same page
        told = [r for r in (f.result() for f in actions) if r.status_code == 503]
        for r in told:
            assert r.headers["content-type"].startswith("text/html")
            assert "<html" not in r.text and "the server is busy" in r.text
        api = [r for r in (f.result() for f in writes) if r.status_code == 503]
        assert api and all(r.headers["content-type"] == "application/json" for r in api)
        assert browser.get("/").status_code == 200  # nothing wedged
        browser.close()


def test_engines_wait_for_the_database_off_the_loop(tmp_path: Path) -> None:
    """The poller and the courier write while the lock is held: only their threads wait."""
    with running_server(tmp_path / "data") as server:
        server.add_app("shop", tmp_path / "none.git", poll_interval=1)
        sessions = session_factory(make_engine(database_url(None, server.data)))

        def polled() -> object:
            with sessions() as session:
                return session.query(App).one().last_polled_at

        def attempts() -> int:
            with sessions() as session:
                return session.query(Notification).one().attempts

        wait_for(polled, timeout=30)
        with sessions() as session:
            session.add(
                Notification(
                    app_id=session.query(App).one().id,
                    key="test:1",
                    event="failure",
                    target="json://127.0.0.1:9/",
                    title="t",
                    body="b",
                    # due once the lock below is held: the courier leases it then
                    next_attempt_at=utcnow() + timedelta(seconds=1.5),
                )
            )
            session.commit()
        with write_lock(server.data / "conveyor.db"):
            seen = polled()
            deadline = time.monotonic() + 4  # the poller (1 s) and the courier (1.5 s) try
            probes = []
            while time.monotonic() < deadline:
                probes.append(healthz_time(server.http))
                time.sleep(0.1)
            assert polled() == seen  # the poller is waiting for the lock...
            assert attempts() == 0  # ...and so is the courier
        assert max(probes) < HEALTHZ_BOUND, probes  # ...but not on the event loop
        wait_for(lambda: polled() != seen, timeout=30)
        wait_for(lambda: attempts() >= 1, timeout=30)
        assert server.http.get("/api/status").status_code == 200


@pytest.mark.postgresql
def test_a_postgresql_lock_waited_out_is_503_then_the_request_goes_through(
    tmp_path: Path, pg_database: str
) -> None:
    """On PostgreSQL the app's write lock is an advisory lock: a request that waits
    `--db-wait` for it (lock_timeout) is told to come back, as with SQLite's lock."""
    env = {"CONVEYOR_DB_WAIT": "1"}
    server = ServerProcess(tmp_path / "data", env, args=("--db", pg_database)).start()
    try:
        server.add_app("shop", tmp_path / "none.git")
        run = server.post("/api/apps/shop/runs", {})
        with psycopg.connect(pg_database, autocommit=True) as holder:
            row = holder.execute("SELECT id FROM apps WHERE name = 'shop'").fetchone()
            assert row is not None
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (APP_LOCKS, row[0]))
            started = time.monotonic()
            r = server.http.post(f"/api/runs/{run['id']}/abort", timeout=30)
            took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after") == "1" and "busy" in r.json()["detail"]
        assert took < REQUEST_BOUND, took
        # the lock is gone with its holder: the same request is answered
        assert server.http.post(f"/api/runs/{run['id']}/abort").status_code in (200, 409)
    finally:
        server.stop()
        server.http.close()
