"""The courier against real endpoints on 127.0.0.1: live, hung, refusing, flaky."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.notify.delivery import Courier, Policy, notify_type, scrub
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import Notification
from tests.helpers import wait_for_async
from tests.notify.receivers import Blackhole, Receiver, refusing_url

# Apprise imports imghdr (deprecated in 3.11, gone in 3.13): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

FAST = Policy(timeout=1.0, backoff=(0.3, 0.3))  # three attempts


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(store_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def queue(sessions: sessionmaker[Session], url: str, event: str = "failure,rollback") -> int:
    with sessions() as session:
        row = Notification(
            key="deployment:1:end",
            event=event,
            target=url,
            title="shop production: 1a2b3c4-3 failed and was rolled back to 0f0f0f0-2",
            body="What: deployment 1…\nLink: http://ci/deployments/1",
        )
        session.add(row)
        session.commit()
        return row.id


def row(sessions: sessionmaker[Session], row_id: int) -> Notification:
    with sessions() as session:
        return session.get_one(Notification, row_id)


async def run_until(
    courier: Courier, done: Callable[[], bool], seen: Callable[[], None] | None = None
) -> None:
    """Serve until `done()`, calling `seen()` at each look; fails after a generous bound."""
    task = asyncio.create_task(courier.serve())
    try:

        def finished() -> bool:
            if seen is not None:
                seen()
            return bool(done())

        await wait_for_async(finished, timeout=30, interval=0.05)
    finally:
        await courier.stop()
        task.cancel()


def test_a_hung_and_a_refusing_endpoint_do_not_hold_up_a_live_one(
    sessions: sessionmaker[Session],
) -> None:
    with Receiver() as live, Blackhole() as hung:
        refused = refusing_url()
        ids = {
            "hung": queue(sessions, hung.url()),
            "refused": queue(sessions, refused),
            "live": queue(sessions, live.url("/hook")),
        }
        states_when_live_arrived: dict[str, str] = {}

        def look() -> None:
            if live.received and not states_when_live_arrived:
                states_when_live_arrived.update({k: row(sessions, i).state for k, i in ids.items()})

        def done() -> bool:
            return all(row(sessions, i).state != "pending" for i in ids.values())

        asyncio.run(run_until(Courier(sessions, FAST), done, look))

    # the live target had its message while the hung one was still on its first attempts
    assert states_when_live_arrived["hung"] == "pending", states_when_live_arrived
    assert len(live.received) == 1
    got = live.received[0]
    assert got["path"] == "/hook"
    assert got["title"].startswith("shop production: 1a2b3c4-3 failed")
    assert got["message"].endswith("Link: http://ci/deployments/1")
    assert got["type"] == "failure"
    sent = row(sessions, ids["live"])
    assert (sent.state, sent.attempts, sent.last_error) == ("sent", 1, None)
    assert sent.sent_at is not None

    dead = row(sessions, ids["hung"])
    assert (dead.state, dead.attempts) == ("failed", FAST.attempts)
    assert dead.last_error and "timed out" in dead.last_error.lower(), dead.last_error
    assert len(hung.accepted) == FAST.attempts  # it was really tried each time
    gone = row(sessions, ids["refused"])
    assert (gone.state, gone.attempts) == ("failed", FAST.attempts)
    assert gone.last_error and "refused" in gone.last_error.lower(), gone.last_error


def test_a_service_having_a_bad_moment_gets_the_message_on_a_later_attempt(
    sessions: sessionmaker[Session],
) -> None:
    with Receiver(fail_first=1) as flaky:
        row_id = queue(sessions, flaky.url(), event="success")
        asyncio.run(
            run_until(Courier(sessions, FAST), lambda: row(sessions, row_id).state != "pending")
        )
    done = row(sessions, row_id)
    assert (done.state, done.attempts) == ("sent", 2)
    assert [m["type"] for m in flaky.received] == ["success"]


def test_an_unusable_url_fails_after_its_attempts_with_a_clear_error(
    sessions: sessionmaker[Session],
) -> None:
    row_id = queue(sessions, "nosuchservice://x")
    asyncio.run(
        run_until(Courier(sessions, FAST), lambda: row(sessions, row_id).state != "pending")
    )
    failed = row(sessions, row_id)
    assert (failed.state, failed.attempts) == ("failed", FAST.attempts)
    assert failed.last_error and "not a usable Apprise URL" in failed.last_error


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Policy()),
        ({"CONVEYOR_NOTIFY_TIMEOUT": "2"}, Policy(2.0, Policy().backoff)),
        ({"CONVEYOR_NOTIFY_RETRY": "1, 2"}, Policy(Policy().timeout, (1.0, 2.0))),
        ({"CONVEYOR_NOTIFY_RETRY": ""}, Policy(Policy().timeout, ())),
        ({"CONVEYOR_NOTIFY_RETRY": "soon"}, Policy()),
    ],
)
def test_policy_from_the_environment(environ: dict[str, str], expected: Policy) -> None:
    assert Policy.from_env(environ) == expected


@pytest.mark.parametrize(
    ("attempts", "wait"), [(1, 5.0), (2, 15.0), (3, 40.0), (4, None), (5, None)]
)
def test_four_attempts_over_about_a_minute_by_default(attempts: int, wait: float | None) -> None:
    assert Policy().attempts == 4
    assert Policy().retry_after(attempts) == wait


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ("failure", "failure"),
        ("failure,rollback", "failure"),
        ("rollback,success", "success"),
        ("success", "success"),
        ("approval", "warning"),
    ],
)
def test_apprise_type(event: str, kind: str) -> None:
    assert notify_type(event) == kind


@pytest.mark.parametrize(
    ("url", "text", "hidden", "kept"),
    [
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "error posting to Slack with url: /services/T1JJ3T3L2/A1BRTD4JD/"
            "TIiajkdnlazkcOXrIdevi7FQ (T1JJ3T3L2 TIiajkdnlazkcOXrIdevi7FQ)",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
            ["Slack"],
        ),
        (
            "json://bob:s3cr3tpass@hooks.example.com/path/tok3n-abc?key=v4lue-xyz",
            "refused by hooks.example.com: s3cr3tpass tok3n-abc v4lue-xyz",
            ["s3cr3tpass", "tok3n-abc", "v4lue-xyz"],
            ["hooks.example.com"],
        ),
        (
            "json://127.0.0.1:8080/",
            "A Connection error occurred sending JSON notification to 127.0.0.1.",
            [],
            ["127.0.0.1"],
        ),
    ],
)
def test_errors_keep_no_secret_from_the_url(
    url: str, text: str, hidden: list[str], kept: list[str]
) -> None:
    clean = scrub(text, url)
    for secret in hidden:
        assert secret not in clean, clean
    for word in kept:
        assert word in clean, clean
