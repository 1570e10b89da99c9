"""Guarded rollouts decided: the next move for the judge's word and the clock, and what
the judge compares (the answers the flag is on for against off)."""

from __future__ import annotations

import pytest

from conveyor.config import Analysis
from conveyor.deploy.guarded import (
    Act,
    StepLook,
    answer_keys,
    evidence_text,
    flags_view,
    next_move,
    on_and_off,
    settings,
)
from conveyor.protocol import AppMetrics, Evidence, Judgement, ReleaseCounters, RouterMetrics


def _judged(verdict: str, reasons: list[str] | None = None) -> Judgement:
    return Judgement(
        verdict=verdict,  # type: ignore[arg-type]
        requests=120,
        error_rate=0.05,
        p99=0.01,
        reasons=reasons or [],
    )


STEPS = [5, 25, 50, 100]


@pytest.mark.parametrize(
    ("steps", "step", "elapsed", "verdict", "act"),
    [
        (STEPS, 0, 1.0, "fail", Act.STOP),  # a regression stops at once, whatever the clock
        (STEPS, 2, 99.0, "fail", Act.STOP),
        (STEPS, 0, 1.0, "pass", Act.WAIT),  # the pause is not over
        (STEPS, 0, 10.0, "inconclusive", Act.WAIT),  # over, but not enough seen yet
        (STEPS, 0, 10.0, "pass", Act.ADVANCE),
        (STEPS, 2, 10.0, "pass", Act.ADVANCE),
        (STEPS, 3, 0.0, "inconclusive", Act.COMPLETE),  # 100%: nobody left to compare with
        ([5, 25], 1, 1.0, "pass", Act.WAIT),  # a last step below 100 is judged too
        ([5, 25], 1, 10.0, "pass", Act.COMPLETE),
        ([5, 25], 1, 10.0, "fail", Act.STOP),
        # give_up 60 s after the 5 s pause
        (STEPS, 0, 64.0, "inconclusive", Act.WAIT),
        (STEPS, 0, 65.0, "inconclusive", Act.GIVE_UP),
        (STEPS, 1, 999.0, "inconclusive", Act.GIVE_UP),
        ([5, 25], 1, 999.0, "inconclusive", Act.GIVE_UP),  # a last step below 100 too
        (STEPS, 0, 999.0, "pass", Act.ADVANCE),  # a late pass still advances
        (STEPS, 0, 999.0, "fail", Act.STOP),
        (STEPS, 3, 999.0, "inconclusive", Act.COMPLETE),  # 100% is never given up
    ],
)
def test_next_move(steps: list[int], step: int, elapsed: float, verdict: str, act: Act) -> None:
    judged = _judged(verdict, ["5xx up"])
    look = StepLook(steps, step, 1000.0, 5.0, 1000.0 + elapsed, judged, give_up=60.0)
    move = next_move(look)
    assert move.act == act
    if act == Act.STOP:
        assert move.why == "5xx up"


def test_giving_up_says_what_was_seen_what_was_needed_and_what_to_do() -> None:
    look = StepLook(
        [5, 25], 0, 0.0, 600.0, 4210.0, _judged("inconclusive"), give_up=3600.0, min_requests=200
    )
    move = next_move(look)
    assert move.act == Act.GIVE_UP
    assert move.why.startswith("gave up at 5%: in 1h10m10s the judge saw 120 requests")
    assert "it needs 200 (analysis.min_requests)" in move.why
    assert "flags.give_up: 1h after the step's pause" in move.why
    assert "start the rollout again" in move.why


@pytest.mark.parametrize(
    ("variants", "on"),
    [([], ["f=on"]), (["a", "b"], ["f=a", "f=b"])],
)
def test_answer_keys(variants: list[str], on: list[str]) -> None:
    assert answer_keys("f", variants) == (on, "f=off")


def test_on_is_every_answer_but_off_and_a_missing_answer_is_zero() -> None:
    counters = {
        "f=a": ReleaseCounters(requests=3, errors_5xx=1),
        "f=b": ReleaseCounters(requests=4),
    }
    on, off = on_and_off(counters, ["f=a", "f=b"], "f=off")
    assert (on.requests, on.errors_5xx) == (7, 1)
    assert off.requests == 0


def test_flags_view_puts_the_answers_in_place_of_releases() -> None:
    metrics = RouterMetrics(
        backend="embedded",
        started_at=1.0,
        apps={
            "shop": AppMetrics(
                app="shop",
                releases={"r1": ReleaseCounters(requests=9)},
                flags={"f=on": ReleaseCounters(requests=2)},
            )
        },
    )
    view = flags_view(metrics)
    assert view is not None and view.apps["shop"].releases == {"f=on": ReleaseCounters(requests=2)}
    assert view.started_at == 1.0
    assert flags_view(None) is None


def test_settings_always_compare_without_warm_up() -> None:
    assert settings(None).compare
    mine = settings(Analysis.model_validate({"p99": "1s", "min_requests": 40, "warmup": "30s"}))
    assert mine.compare and mine.p99 == 1.0 and mine.min_requests == 40 and mine.warmup == 0


def test_evidence_text_names_each_check() -> None:
    j = _judged("fail")
    j = j.model_copy(
        update={
            "evidence": [Evidence(check="errors vs baseline", verdict="fail", summary="5% vs 0%")]
        }
    )
    text = evidence_text(j)
    assert text.splitlines() == [
        "judge: fail after 120 requests with the flag on (5xx 5.00%)",
        "- errors vs baseline: fail: 5% vs 0%",
    ]
