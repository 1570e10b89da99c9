"""A canary step under people's hands: the engine's next move and the requests, as tables."""

from __future__ import annotations

import pytest

from conveyor.deploy.control import (
    ControlError,
    Next,
    StepWatch,
    ask,
    done,
    left,
    next_action,
    no_traffic_after,
    watched,
)
from conveyor.protocol import StepControl

T0 = 1_000.0  # the watch began
FREE = StepControl()
PAUSED_AT_10 = StepControl(paused_by="dan", paused_at=T0 + 10)
HELD_20 = StepControl(held=20.0)
PROMOTED = StepControl(promoted_by="dan")


def step(
    control: StepControl = FREE,
    verdict: str | None = "inconclusive",
    *,
    analysed: bool = True,
    monitor: bool = False,
    conclusive: bool = False,
    early: bool = False,
) -> StepWatch:
    return StepWatch(
        pause=30.0,
        watch_from=T0,
        control=control,
        analysed=analysed,
        monitor=monitor,
        verdict=verdict,
        conclusive=conclusive,
        early=early,
    )


@pytest.mark.parametrize(
    ("watch", "at", "expected"),
    [
        # the clock alone
        (step(verdict="pass"), 29, Next.WAIT),
        (step(verdict="pass"), 30, Next.END),
        (step(verdict="pass", conclusive=True, early=True), 5, Next.END),
        (step(verdict="pass", conclusive=True), 5, Next.WAIT),
        (step(verdict=None, analysed=False), 30, Next.END),
        (step(verdict="inconclusive"), 30, Next.WAIT),
        (step(verdict="inconclusive"), no_traffic_after(30), Next.NO_TRAFFIC),
        (step(verdict="fail"), 1, Next.FAIL),
        # a promote ends the step at once, whatever the judge or the clock say
        (step(PROMOTED, verdict="inconclusive"), 1, Next.PROMOTED),
        (step(PROMOTED, verdict=None, analysed=False), 0, Next.PROMOTED),
        (step(StepControl(promoted_by="dan", paused_by="eve"), verdict="pass"), 1, Next.PROMOTED),
        # a pause holds the step, not the judge: a failure still rolls back
        (step(PAUSED_AT_10, verdict="pass"), 500, Next.WAIT),
        (step(PAUSED_AT_10, verdict="pass", conclusive=True, early=True), 500, Next.WAIT),
        (step(PAUSED_AT_10, verdict=None, analysed=False), 500, Next.WAIT),
        (step(PAUSED_AT_10, verdict="inconclusive"), 5000, Next.WAIT),  # its clock stopped
        (step(PAUSED_AT_10, verdict="fail"), 500, Next.FAIL),
        # resumed: the time it was held does not count
        (step(HELD_20, verdict="pass"), 49, Next.WAIT),
        (step(HELD_20, verdict="pass"), 50, Next.END),
        # the watch window after 100% ends at its time, pass or inconclusive
        (step(verdict="inconclusive", monitor=True), 30, Next.END),
        (step(verdict="fail", monitor=True), 30, Next.FAIL),
    ],
)
def test_next_action(watch: StepWatch, at: float, expected: Next) -> None:
    assert next_action(watch, T0 + at) == expected


@pytest.mark.parametrize(
    ("control", "watch_from", "at", "seconds"),
    [
        (FREE, None, 50, 0.0),  # not watched yet
        (FREE, T0, 12, 12.0),
        (PAUSED_AT_10, T0, 25, 10.0),  # held since 10
        (StepControl(paused_by="dan", paused_at=T0 - 5), T0, 25, 0.0),  # paused before the watch
        (HELD_20, T0, 25, 5.0),
        (StepControl(held=5, paused_by="dan", paused_at=T0 + 20), T0, 30, 15.0),
    ],
)
def test_watched(control: StepControl, watch_from: float | None, at: float, seconds: float) -> None:
    assert watched(watch_from, control, T0 + at) == seconds
    assert left(30.0, watch_from, control, T0 + at) == max(0.0, 30.0 - seconds)


@pytest.mark.parametrize(
    ("before", "action", "watch_from", "at", "after"),
    [
        (FREE, "pause", T0, 10, {"paused_by": "dan", "paused_at": T0 + 10, "held": 0.0}),
        (PAUSED_AT_10, "resume", T0, 25, {"paused_by": None, "paused_at": None, "held": 15.0}),
        # paused while the hosts converged: only the watched part was held
        (StepControl(paused_by="dan", paused_at=T0 - 30), "resume", T0, 5, {"held": 5.0}),
        (StepControl(paused_by="dan", paused_at=T0), "resume", None, 5, {"held": 0.0}),
        (FREE, "promote", T0, 3, {"promoted_by": "dan", "full": False}),
        (FREE, "promote-full", T0, 3, {"promoted_by": "dan", "full": True}),
        (PAUSED_AT_10, "promote", T0, 12, {"promoted_by": "dan", "paused_by": None, "held": 2.0}),
    ],
)
def test_ask_records_who_and_when(
    before: StepControl, action: str, watch_from: float | None, at: float, after: dict[str, object]
) -> None:
    now = T0 + at
    got = ask(before, action, "dan", now, watch_from)
    assert {k: getattr(got, k) for k in after} == after
    assert [(a.action, a.by, a.at.timestamp()) for a in got.actions][-1] == (action, "dan", now)


@pytest.mark.parametrize(
    ("before", "action", "says"),
    [
        (PAUSED_AT_10, "pause", "already paused by dan"),
        (FREE, "resume", "not paused"),
        (PROMOTED, "pause", "already promoted by dan"),
        (PROMOTED, "promote-full", "already promoted by dan"),
        (FREE, "skip", "unknown action"),
    ],
)
def test_ask_refuses_what_makes_no_sense(before: StepControl, action: str, says: str) -> None:
    with pytest.raises(ControlError, match=says):
        ask(before, action, "eve", T0, T0)


def test_done_says_who_did_what_and_when() -> None:
    got = ask(FREE, "promote-full", "dan", 1_733_400_000.0, None)
    assert done(got.actions[-1]) == "promoted to 100% by dan at 2024-12-05 12:00:00 UTC"
