"""Leases, fencing and the cluster's wake-ups (store/leases.py, store/cluster.py).

The decisions as tables; then on a real PostgreSQL: a claim, a takeover once the
holder is dead (its liveness lock gone), the old holder's commit refused, and a
NOTIFY from one Cluster waking another.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conveyor.deploy.rolling import NAME_MAX, batch_name
from conveyor.store import leases
from conveyor.store.cluster import ALL, MAX_PAYLOAD, Cluster, alive, parse, payload
from conveyor.store.db import database_url, make_engine, migrate, session_factory
from conveyor.store.leases import LeaseLost, decide, fenced
from conveyor.store.models import Token
from testbed.helpers import wait_for
from testbed.postgres import Cluster as PgCluster

NOW = datetime(2026, 12, 6, 6, 0, 0)
LATER = NOW + timedelta(seconds=5)
EARLIER = NOW - timedelta(seconds=1)


@pytest.mark.parametrize(
    ("holder", "expires", "holder_alive", "expected"),
    [
        (None, None, False, "take"),  # nobody holds it
        ("me", LATER, True, "keep"),  # mine: renew
        ("me", EARLIER, True, "take"),  # mine but expired: a new generation fences the old
        ("other", LATER, True, "wait"),  # a live holder within its lease
        ("other", EARLIER, True, "take"),  # expired: a frozen or cut-off holder
        ("other", LATER, False, "take"),  # its process is gone: no need to wait
    ],
)
def test_who_drives(
    holder: str | None, expires: datetime, holder_alive: bool, expected: str
) -> None:
    assert decide(holder, expires, holder_alive, "me", NOW) == expected


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["web-2", "web-1", "web-1"], (7, ["web-1", "web-2"])),
        ([f"host-{i:04d}" for i in range(1000)], (7, None)),  # too many for NOTIFY: all
    ],
)
def test_wake_up_payloads(hosts: list[str], expected: tuple[int, list[str] | None]) -> None:
    text = payload(7, hosts)
    assert len(text.encode()) <= MAX_PAYLOAD
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["", "nonsense", "x|web-1"])
def test_an_unreadable_wake_up_wakes_everyone(text: str) -> None:
    assert parse(text) == (None, None)
    assert parse(f"3|{ALL}") == (3, None)


def test_a_batch_of_many_hosts_is_named_within_the_store_s_bound() -> None:
    assert batch_name(1, 2, ["web-1", "web-2"]) == "batch 1/2: web-1, web-2"
    many = [f"h{i:05d}" for i in range(1000)]
    name = batch_name(1, 1, many)
    assert len(name) <= NAME_MAX
    assert name.startswith("batch 1/1: h00000, h00001") and name.endswith("(1000 hosts)")


@pytest.mark.postgresql
def test_a_dead_holder_s_lease_is_taken_over_and_its_commits_refused(
    pg_cluster: PgCluster, pg_database: str, tmp_path: Path
) -> None:
    pg_cluster.empty(pg_database)
    engine = make_engine(database_url(pg_database, tmp_path))
    migrate(engine)
    sessions = session_factory(engine)
    first, second = Cluster(pg_database, "a"), Cluster(pg_database, "b")
    woken: list[list[str] | None] = []
    got = threading.Event()

    def on_change(hosts: list[str] | None) -> None:
        woken.append(hosts)
        got.set()

    first.start(lambda _hosts: None)
    second.start(on_change)
    try:
        with sessions() as s:
            assert alive(s, [first.server, second.server]) == {first.server, second.server}
            held = leases.claim(s, "deployment", 1, first.holder, alive)
        assert held is not None and held.generation == 1
        with sessions() as s:  # a live holder within its lease: wait
            assert leases.claim(s, "deployment", 1, second.holder, alive) is None
        # a wake-up from one server reaches the other
        first.publish(["web-1", "web-2"])
        assert got.wait(10) and woken == [["web-1", "web-2"]]
        first.stop()  # its process "died": the liveness lock is released
        with sessions() as s:
            wait_for(lambda: first.server not in alive(s, [first.server]), timeout=10)
            taken = leases.claim(s, "deployment", 1, second.holder, alive)
        assert taken is not None and taken.generation == 2
        # the old holder, resumed, writes nothing more
        with fenced(held), sessions() as s:
            s.add(Token(name="late", role="admin", token_hash="h"))
            with pytest.raises(LeaseLost):
                s.commit()
        with fenced(taken), sessions() as s:
            assert leases.renew(s, taken)
        with sessions() as s:
            assert s.query(Token).filter_by(name="late").count() == 0
            assert not leases.renew(s, held)
    finally:
        first.stop()
        second.stop()
        engine.dispose()
