"""Where a run's steps go, which runner may take them, what a lost runner costs."""

from __future__ import annotations

import pytest

from conveyor.pipeline.handoff import after_loss, dispatch, fits, parse_labels, waiting_reason
from conveyor.protocol.runners import claim_value, parse_claim

# name, runs_on, live runners, where
DISPATCH = [
    ("no runner, no labels: the server, as always", [], 0, "server"),
    ("a runner up, no labels: the runners", [], 1, "runners"),
    ("labels, no runner: waits for one", ["big"], 0, "runners"),
    ("labels, runners up", ["big"], 2, "runners"),
]


@pytest.mark.parametrize(
    ("runs_on", "live", "where"), [pytest.param(*c, id=n) for n, *c in DISPATCH]
)
def test_dispatch(runs_on: list[str], live: int, where: str) -> None:
    assert dispatch(runs_on, live) == where


# name, runs_on, the runner's labels, fits
FITS = [
    ("no labels asked: any runner", [], [], True),
    ("asked and held", ["big"], ["big", "linux"], True),
    ("asked, not held", ["big"], ["linux"], False),
    ("all of them are needed", ["big", "gpu"], ["big"], False),
]


@pytest.mark.parametrize(("runs_on", "labels", "ok"), [pytest.param(*c, id=n) for n, *c in FITS])
def test_fits(runs_on: list[str], labels: list[str], ok: bool) -> None:
    assert fits(runs_on, labels) is ok


@pytest.mark.parametrize(
    ("runs_on", "live", "reason"),
    [
        ([], [], "waiting for a runner"),
        (["big"], [["linux"]], "waiting for a runner with labels big (none is up)"),
        (["big", "gpu"], [["big", "gpu", "x"]], "waiting for a runner with labels big, gpu"),
    ],
)
def test_waiting_reason(runs_on: list[str], live: list[list[str]], reason: str) -> None:
    assert waiting_reason(runs_on, live) == reason


def test_a_lost_runner_costs_one_retry_then_the_run() -> None:
    state, attempt, reason = after_loss(1, "r1")
    assert (state, attempt) == ("queued", 2)
    assert "runner r1 stopped answering" in reason
    state, attempt, reason = after_loss(2, "r2")
    assert (state, attempt) == ("failed", 2)
    assert reason.startswith("interrupted: runner r2 stopped answering")
    assert "last attempt (2 of 2)" in reason


def test_labels_and_claims_read_back() -> None:
    assert parse_labels(" big,linux,,big ") == ["big", "linux"]
    assert parse_claim(claim_value("runner-1.example", 2)) == ("runner-1.example", 2)
    assert parse_claim("no-attempt") is None
    assert parse_claim("/3") is None
