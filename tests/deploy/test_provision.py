"""Provisioned environments' decisions: tables of cases."""

from __future__ import annotations

import pytest

from conveyor.deploy.provision import Standing, host_names, retry_delay, teardown_due


@pytest.mark.parametrize(
    ("output", "names", "bad"),
    [
        ("int-1\n", ["int-1"], []),
        ("int-1\nint-2\n\n  int-3  \n", ["int-1", "int-2", "int-3"], []),
        ("int-1\nint-1\n", ["int-1"], []),
        ("", [], []),
        ("\n\n", [], []),
        ("starting agent...\nint-1\n", ["int-1"], ["starting agent..."]),
        ("int 1\n", [], ["int 1"]),
    ],
)
def test_host_names(output: str, names: list[str], bad: list[str]) -> None:
    assert host_names(output) == (names, bad)


@pytest.mark.parametrize(
    ("attempts", "delay"), [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (50, 300.0)]
)
def test_retry_delay(attempts: int, delay: float) -> None:
    assert retry_delay(attempts) == delay


def standing(**kw: object) -> Standing:
    base: dict[str, object] = {
        "state": "up",
        "deployment_state": "succeeded",
        "provisioning_here": False,
        "tearing_here": False,
        "wait_left": 0.0,
    }
    return Standing(**(base | kw))  # type: ignore[arg-type]


CASES = [
    ("succeeded: torn down", standing(), True),
    ("failed: torn down", standing(deployment_state="failed"), True),
    ("rolled back: torn down", standing(deployment_state="rolled_back"), True),
    ("deployment gone", standing(deployment_state=None), True),
    ("running: kept", standing(deployment_state="running"), False),
    ("rolling back: kept", standing(deployment_state="rolling_back"), False),
    (
        "queued and up (killed before planning): kept, reused",
        standing(deployment_state="queued"),
        False,
    ),
    (
        "queued, provisioning cut off by a killed server",
        standing(state="provisioning", deployment_state="queued"),
        True,
    ),
    (
        "queued, provisioning here now",
        standing(state="provisioning", deployment_state="queued", provisioning_here=True),
        False,
    ),
    ("already tearing down here", standing(tearing_here=True), False),
    ("a failed teardown waits", standing(state="teardown_failed", wait_left=3.0), False),
    ("a failed teardown, tried again", standing(state="teardown_failed"), True),
    ("torn down already", standing(state="torn_down"), False),
]


@pytest.mark.parametrize(("what", "s", "due"), CASES, ids=[c[0] for c in CASES])
def test_teardown_due(what: str, s: Standing, due: bool) -> None:
    assert teardown_due(s) is due


@pytest.mark.parametrize(
    ("attempt", "notified"),
    [(1, True), (2, False), (9, False), (10, True), (11, False), (20, True)],
)
def test_failed_teardowns_notified(attempt: int, notified: bool) -> None:
    from conveyor.deploy.provision import notify_of

    assert notify_of(attempt) is notified


def test_the_failed_teardown_message_says_what_where_and_why() -> None:
    from conveyor.deploy.provision import teardown_failed

    m = teardown_failed(
        "shop", "integration", 7, 1, 5.0, "the cloud said no", "http://c/deployments/7"
    )
    assert m.kinds == frozenset({"failure"})
    assert "shop integration (deployment #7)" in m.title
    assert "the cloud said no" in m.body and "http://c/deployments/7" in m.body
    assert "Tried again in 5 s" in m.body
