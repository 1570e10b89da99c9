"""Which server runs a run, when several share one PostgreSQL database.

A run is taken by the transaction that marks it running (pipeline/runs.py
next_runnable: its row locked with SKIP LOCKED); the same commit records the
server in a `run` lease (store/leases.py). A run's lease is not renewed: its steps
are processes of that server, so the run is orphaned exactly when that server's
process is gone, which its liveness lock tells (store/cluster.py). Any server then
retries it once, or fails it, as a restarted single server does.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from conveyor.store.cluster import alive
from conveyor.store.leases import Holder
from conveyor.store.models import Lease, Run, utcnow

KIND = "run"


def hold_run(session: Session, run_id: int, me: Holder) -> None:
    """Record that this server runs the run (in the transaction that marks it running)."""
    values = {
        "holder": me.name,
        "server": me.server,
        "generation": 1,
        # unused for runs (never renewed): liveness decides, see above
        "expires_at": utcnow() + timedelta(days=3650),
    }
    session.execute(
        insert(Lease)
        .values(kind=KIND, key=run_id, **values)
        .on_conflict_do_update(index_elements=["kind", "key"], set_=values)
    )


def orphaned_runs(session: Session, mine: Collection[int]) -> list[int]:
    """Running runs that no live server runs (not this one's, not a live other's)."""
    running = session.execute(
        select(Run.id, Lease.server)
        .outerjoin(Lease, (Lease.kind == KIND) & (Lease.key == Run.id))
        .where(Run.state == "running", Run.handoff.is_(None))  # a runner's: handoff.py
    ).all()
    servers = {server for _, server in running if server is not None}
    living = alive(session, servers)
    return [
        run_id
        for run_id, server in running
        if run_id not in mine and (server is None or server not in living)
    ]
