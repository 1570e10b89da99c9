"""A step's next move from its record, its hosts, the judge and the clock, as tables."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.deploy.control import StepWatch, no_traffic_after
from conveyor.deploy.detail import StepDetail, StepOptions, dump_fields
from conveyor.deploy.progress import HostView, Progress
from conveyor.deploy.stepping import (
    LOOK_EVERY,
    OFFLINE_GRACE,
    ROLLBACK_WAIT,
    Act,
    Move,
    Pause,
    PauseLook,
    StepLook,
    judged_move,
    next_move,
    pause_move,
    rollback_move,
    source_gives_up,
    step_watch,
    traffic_until,
)
from conveyor.protocol import Judgement, ObservedApp, ObservedState, StepControl

OK = (Progress.CONVERGED, None)
WAITING = (Progress.WAITING, None)
OFFLINE = (Progress.OFFLINE, "host b is not connected")
FAILED = (Progress.FAILED, "release r2 failed on b: exit 1")


def view(name: str, error: str | None = None) -> HostView:
    observed = ObservedState(host=name, generation=1, apps=[ObservedApp(app="shop", error=error)])
    return HostView(name, True, 1, observed)


def look(**hosts: tuple[Progress, str | None]) -> StepLook:
    return StepLook(
        name="50%",
        rollback=False,
        hosts=hosts,
        views={n: view(n, "port 8000 in use" if n == "b" else None) for n in hosts},
        app="shop",
        elapsed=10.0,
        converge_limit=130.0,
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # the hosts converge: wait, then fail with what they report once over the limit
        (look(a=OK, b=WAITING), Move(Act.WAIT)),
        (
            replace(look(a=OK, b=WAITING), elapsed=131.0),
            Move(
                Act.FAIL,
                "host(s) b did not reach '50%' within 130 s: b: port 8000 in use",
            ),
        ),
        (
            replace(look(a=WAITING), elapsed=131.0),
            Move(Act.FAIL, "host(s) a did not reach '50%' within 130 s"),
        ),
        # a failure counts once confirmed (a stale report is not a failure)
        (look(a=OK, b=FAILED), Move(Act.WAIT)),
        (
            replace(look(a=OK, b=FAILED), confirmed=frozenset({"b"})),
            Move(Act.FAIL, "release r2 failed on b: exit 1"),
        ),
        (
            replace(look(a=OK, b=(Progress.FAILED, None)), confirmed=frozenset({"b"})),
            Move(Act.FAIL, "failed on b"),
        ),
        # a host gone past the grace fails the step
        (
            look(a=OK, b=OFFLINE),
            Move(
                Act.FAIL,
                f"host b lost its connection to the server during '50%' "
                f"(unreachable for {OFFLINE_GRACE:g} s)",
            ),
        ),
        # converged: checks first, then the pause, then the end
        (replace(look(a=OK), checks=True), Move(Act.CHECK)),
        (replace(look(a=OK), checks=True, checked=True), Move(Act.END)),
        (replace(look(a=OK), checks=True, checked=True, pause=30.0), Move(Act.WATCH)),
        (replace(look(a=OK), pause=30.0), Move(Act.WATCH)),
        (look(a=OK), Move(Act.END)),
    ],
)
def test_next_move(step: StepLook, expected: Move) -> None:
    assert next_move(step) == expected


def test_a_rollback_step_records_what_it_reached() -> None:
    rollback = replace(look(a=OK, b=FAILED), rollback=True, confirmed=frozenset())
    assert next_move(rollback).act == Act.ROLLED_BACK


@pytest.mark.parametrize(
    ("hosts", "elapsed", "expected"),
    [
        ({"a": OK, "b": OK}, 1.0, Move(Act.ROLLED_BACK)),
        ({"a": OK, "b": WAITING}, 1.0, Move(Act.WAIT)),
        (
            {"a": OK, "b": WAITING},
            ROLLBACK_WAIT,
            Move(
                Act.ROLLED_BACK,
                pending=("b",),
                notes=(f"b had not confirmed after {ROLLBACK_WAIT:g} s",),
            ),
        ),
        (
            {"a": OFFLINE, "b": FAILED},
            1.0,
            Move(
                Act.ROLLED_BACK,
                failed=("b: release r2 failed on b: exit 1",),
                notes=(
                    "a not connected: the previous release is written as their desired state "
                    "and they return to it when they reconnect",
                    "b: release r2 failed on b: exit 1",
                ),
            ),
        ),
    ],
)
def test_rollback_move(
    hosts: dict[str, tuple[Progress, str | None]], elapsed: float, expected: Move
) -> None:
    assert rollback_move(hosts, elapsed) == expected


T0 = 1_000.0


def watch(
    verdict: str | None = None, control: StepControl | None = None, *, monitor: bool = False
) -> StepWatch:
    return StepWatch(
        pause=30.0,
        watch_from=T0,
        control=control or StepControl(),
        analysed=True,
        monitor=monitor,
        verdict=verdict,
    )


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (PauseLook(None), T0, Pause.START),
        (PauseLook(watch(control=StepControl(promoted_by="dan")), T0, True), T0, Pause.PROMOTED),
        # the judge looks once a LOOK_EVERY; between looks its last word and the clock stand
        (PauseLook(watch(), None, True), T0 + 1, Pause.LOOK),
        (PauseLook(watch("pass"), T0 + 31, True), T0 + 31 + LOOK_EVERY / 2, Pause.END),
        (PauseLook(watch("inconclusive"), T0 + 5, True), T0 + 5.5, Pause.WAIT),
        (PauseLook(watch("fail"), T0 + 5, True), T0 + 5.5, Pause.WAIT),
        # no analysis in the environment: the clock alone
        (PauseLook(replace(watch(), analysed=False)), T0 + 29, Pause.WAIT),
        (PauseLook(replace(watch(), analysed=False)), T0 + 30, Pause.END),
    ],
)
def test_pause_move(state: PauseLook, now: float, expected: Pause) -> None:
    assert pause_move(state, now) == expected


@pytest.mark.parametrize(
    ("w", "verdict", "now", "expected"),
    [
        (watch(), "pass", T0 + 30, Move(Act.END)),
        (watch(), "pass", T0 + 10, Move(Act.WAIT)),
        (watch(), "fail", T0 + 1, Move(Act.FAIL, "analysis failed: error rate 9% > 1%")),
        (watch(monitor=True), "fail", T0 + 1, Move(Act.FAIL, "monitor failed: error rate 9% > 1%")),
        (watch(), "inconclusive", T0 + 30, Move(Act.WAIT)),
        (
            watch(),
            "inconclusive",
            T0 + no_traffic_after(30.0),
            Move(
                Act.FAIL,
                "not enough traffic to judge the release: 12 of the 100 requests needed in "
                f"{no_traffic_after(30.0):g} s",
            ),
        ),
    ],
)
def test_judged_move(w: StepWatch, verdict: str, now: float, expected: Move) -> None:
    assert judged_move(w, verdict, False, ["error rate 9% > 1%"], 12, 100, now) == expected


def test_the_clock_of_a_watch_counts_what_was_held() -> None:
    held = watch(control=StepControl(held=20.0))
    assert traffic_until(held) == T0 + 20.0 + no_traffic_after(30.0)
    assert not source_gives_up(held, T0 + no_traffic_after(30.0))
    assert source_gives_up(held, T0 + 20.0 + no_traffic_after(30.0))


def test_a_step_watch_reads_the_record() -> None:
    assert step_watch(StepDetail(), 30.0, False, None) is None
    judgement = Judgement(
        verdict="pass", requests=200, error_rate=0.0, p99=None, conclusive=True, at=T0 + 3
    )
    detail = StepDetail(options=StepOptions(analyse=True), watch_from=T0, judgement=judgement)
    found = step_watch(detail, 30.0, False, None)
    assert found is not None and not found.analysed  # no analysis in the environment
    assert (found.verdict, found.conclusive, found.watch_from) == ("pass", True, T0)


def test_detail_keys_are_written_as_their_type_says() -> None:
    assert dump_fields(watch_from=T0, checked=True) == {"watch_from": T0, "checked": True}
    assert dump_fields(control=StepControl(paused_by="dan", paused_at=T0))["control"][
        "paused_by"
    ] == ("dan")
    with pytest.raises(KeyError, match="not a key of a step's detail: nonsense"):
        dump_fields(nonsense=1)
    # a record written before (or by hand) reads with its missing keys as defaults
    read = StepDetail.model_validate_json('{"options": {}, "final": "cancelled", "later": 1}')
    assert read.options.pause == 0.0 and read.final == "cancelled" and read.judge is None
