"""The agents' requests in bulk (server/fanout.py) on a real store, SQLite and PostgreSQL:
a batch's answers are exactly what `desired_state` gives each host alone; reports are
written in one transaction; a failed batch fails its requests with 503."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config.loader import parse_config
from conveyor.deploy.desired import DesiredStateError, desired_state, set_host_app
from conveyor.protocol import ChecksRequest, ObservedState, ReleaseWeight
from conveyor.server.fanout import (
    Answer,
    Batcher,
    DesiredAsk,
    Later,
    Report,
    RevokedAgent,
    read_desired,
    write_reports,
)
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, Host, HostApp, Release, Run, utcnow

CONFIG = """
app: shop
service: {start: ./serve, port: 8000, env: {MODE: fast}}
environments:
  production:
    hosts: [p-1, p-2, p-3]
    env: {MODE: safe}
  staging:
    hosts: [s-1]
flags:
  stickiness: cookie:uid
  declare:
    - name: checkout
"""


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(store_url)
    migrate(engine)
    yield engine, session_factory(engine)
    engine.dispose()


@pytest.fixture
def sessions(store: tuple[Engine, sessionmaker[Session]]) -> sessionmaker[Session]:
    """A shop with two releases, hosts running one, both (90/10), none, checks; a
    revoked host; a host whose row names a release without a service section."""
    made = store[1]
    with made() as s:
        app = App(name="shop", repo_url="/shop.git", webhook_secret="s")
        s.add(app)
        s.flush()
        run = Run(app_id=app.id, sha="ab" * 20, trigger="push", state="succeeded")
        s.add(run)
        s.flush()
        for i, (name, text) in enumerate([("bare", "app: shop\n"), ("r1", CONFIG), ("r2", CONFIG)]):
            s.add(
                Release(
                    id=name,
                    app_id=app.id,
                    sha="ab" * 20,
                    run_id=run.id,
                    sha256=str(i) * 64,
                    size=1,
                    config=parse_config(text).model_dump_json(),
                    created_at=utcnow() + timedelta(seconds=i),
                )
            )
        hosts = {n: Host(name=n, state="enrolled") for n in ("p-1", "p-2", "p-3", "s-1", "x-1")}
        hosts["gone"] = Host(name="gone", state="revoked")
        s.add_all(hosts.values())
        s.flush()
        one = [ReleaseWeight(release="r1", weight=100)]
        two = [ReleaseWeight(release="r1", weight=90), ReleaseWeight(release="r2", weight=10)]
        set_host_app(s, hosts["p-1"], app, one, sticky=False, environment="production")
        set_host_app(s, hosts["p-2"], app, two, sticky=True, environment="production")
        set_host_app(s, hosts["s-1"], app, one, sticky=False, environment="staging")
        checks = [ChecksRequest(id="checks-1", app="shop", environment="production", checks=[])]
        hosts["p-3"].checks = json.dumps([c.model_dump() for c in checks])
        hosts["p-3"].generation = 4
        s.add(
            HostApp(
                host_id=hosts["x-1"].id,
                app_id=app.id,
                releases='[{"release": "bare", "weight": 100}]',
            )
        )
        s.commit()
    return made


def alone(sessions: sessionmaker[Session], name: str) -> object:
    """The host's answer as the route gave it before: desired_state, serialized alone."""
    with sessions() as s:
        host = s.query(Host).filter_by(name=name).one()
        return desired_state(s, host).model_dump(mode="json", by_alias=True)


def test_a_batch_answers_each_host_exactly_as_desired_state_does_alone(
    sessions: sessionmaker[Session],
) -> None:
    names = ["p-1", "p-2", "p-3", "s-1", "p-1"]  # a host twice: two polls, one answer
    with sessions() as s:
        found = read_desired(s, [DesiredAsk(n, -1, final=False, first=False) for n in names])
    for name, answer in zip(names, found, strict=True):
        assert isinstance(answer, Answer) and answer.body is not None, name
        assert json.loads(answer.body) == alone(sessions, name), name
    p2 = json.loads(found[1].body or b"")  # type: ignore[union-attr]
    assert [r["weight"] for r in p2["apps"][0]["releases"]] == [90, 10]
    assert p2["apps"][0]["flags"]["stickiness"] == "cookie:uid"
    assert p2["apps"][0]["releases"][0]["service"]["env"] == {"MODE": "safe"}
    assert json.loads(found[2].body or b"")["checks"][0]["id"] == "checks-1"  # type: ignore[union-attr]


def test_a_host_that_cannot_be_answered_fails_alone(sessions: sessionmaker[Session]) -> None:
    asks = [DesiredAsk(n, -1, final=True, first=False) for n in ("x-1", "gone", "nobody", "p-1")]
    with sessions() as s:
        bad, revoked, unknown, good = read_desired(s, asks)
    assert isinstance(bad, DesiredStateError) and "no service section" in str(bad)
    assert isinstance(revoked, RevokedAgent) and revoked.status_code == 401
    assert isinstance(unknown, RevokedAgent)
    assert isinstance(good, Answer) and good.body is not None


def test_a_poll_not_behind_waits_unless_its_wait_is_over_and_a_first_read_notes_it_seen(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        generation = s.query(Host).filter_by(name="p-3").one().generation
        s.query(Host).filter_by(name="p-1").one().last_seen = utcnow()
        s.commit()
        asks = [
            DesiredAsk("p-3", generation, final=False, first=True),  # never seen
            DesiredAsk("p-3", generation, final=True, first=False),
            DesiredAsk("p-3", generation - 1, final=False, first=False),
            DesiredAsk("p-1", 100, final=False, first=True),  # seen just now
        ]
        waits, over, behind, fresh = read_desired(s, asks)
    assert waits == Answer(None, seen=True)
    assert isinstance(over, Answer) and over.body is not None and not over.seen
    assert isinstance(behind, Answer) and behind.body is not None
    assert fresh == Answer(None, seen=False)


def test_reports_are_written_in_one_transaction_the_later_of_a_host_winning(
    sessions: sessionmaker[Session],
) -> None:
    before = utcnow()
    reports = [
        Report("p-1", ObservedState(host="p-1", generation=1, converged=False)),
        Report("p-1", ObservedState(host="p-1", generation=1, converged=True, errors=["x"])),
        Report("p-2", None),  # only seen
        Report("nobody", ObservedState(host="nobody", generation=0)),
    ]
    with sessions() as s:
        found = write_reports(s, reports)
    assert found[:3] == [None, None, None] and isinstance(found[3], RevokedAgent)
    with sessions() as s:
        p1 = s.query(Host).filter_by(name="p-1").one()
        p2 = s.query(Host).filter_by(name="p-2").one()
        assert p1.applied_generation == 1 and json.loads(p1.observed or "")["errors"] == ["x"]
        assert p1.last_seen is not None and p1.last_seen >= before
        assert p2.observed is None and p2.last_seen is not None and p2.last_seen >= before


async def run_inline(fn: object, *args: object) -> object:
    return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]


def test_a_batcher_answers_each_item_fails_one_alone_and_a_failed_batch_with_503() -> None:
    batches: list[list[int]] = []

    def handle(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        if 13 in items:
            raise RuntimeError("the database went away")
        return [ValueError(i) if i < 0 else i * 2 for i in items]

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher("test", handle, run_inline, size=3)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in (1, 2, -3, 4, 5)), return_exceptions=True
        )
        assert results[:2] == [2, 4] and isinstance(results[2], ValueError)
        assert results[3:] == [8, 10]
        assert batches[0] == [1, 2, -3] and batches[1] == [4, 5]  # size 3 at most
        failed = await asyncio.gather(batcher.submit(13), batcher.submit(6), return_exceptions=True)
        for exc in failed:
            assert isinstance(exc, HTTPException) and exc.status_code == 503
        assert await batcher.submit(7) == 14  # the next batch is fine again
        await batcher.stop()

    asyncio.run(main())


def test_a_report_whose_host_row_another_transaction_holds_waits_for_a_later_batch(
    store: tuple[Engine, sessionmaker[Session]], sessions: sessionmaker[Session]
) -> None:
    engine = store[0]
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite locks the whole database, not rows")
    with engine.connect() as other:  # a deployment step's transaction, writing p-1
        other.execute(text("UPDATE hosts SET generation = generation + 1 WHERE name = 'p-1'"))
        reports = [Report("p-1", None), Report("p-2", None)]
        with sessions() as s:
            held, written = write_reports(s, reports)  # at once: no lock waited for
        assert isinstance(held, Later) and written is None
        other.rollback()
    with sessions() as s:
        assert write_reports(s, reports) == [None, None]


def test_a_batcher_hands_an_item_left_for_later_to_its_next_batch() -> None:
    batches: list[list[int]] = []

    def handle(items: Sequence[int]) -> list[int | Exception | Later]:
        batches.append(list(items))
        return [Later() if i == 1 and len(batches) == 1 else i for i in items]

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher("test", handle, run_inline, size=10)
        assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [1, 2]
        assert batches == [[1, 2], [1]]
        await batcher.stop()

    asyncio.run(main())


def test_reports_wait_while_a_wave_of_reads_is_queued() -> None:
    order: list[str] = []

    def read(items: Sequence[int]) -> list[int | Exception | Later]:
        order.append(f"read {items[0]}")
        time.sleep(0.05)
        return list(items)

    def write(items: Sequence[int]) -> list[int | Exception | Later]:
        order.append("write")
        return list(items)

    async def main() -> None:
        reads: Batcher[int, int] = Batcher("reads", read, run_inline, size=1)
        writes: Batcher[int, int] = Batcher("writes", write, run_inline, size=10, yield_to=reads)
        wave = [asyncio.ensure_future(reads.submit(i)) for i in range(4)]
        await asyncio.sleep(0)  # the wave is queued before the report comes
        assert await writes.submit(9) == 9
        await asyncio.gather(*wave)
        # the report went once no whole batch of reads was waiting any more
        assert order.index("write") >= 3, order
        await reads.stop()
        await writes.stop()

    asyncio.run(main())
