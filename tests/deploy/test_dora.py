"""The delivery (DORA) figures on a recorded history match those computed by hand.

The history and the hand computation of the whole of it are in dora_history.py; each
case below takes another window of it, its figures worked out in its comment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import pytest

from conveyor.deploy.dora import DeploymentRecord, dora, dora_over_time, median, percentile
from tests.deploy.dora_history import WHOLE, P, S, at, records

T0 = datetime(2024, 3, 4, 9, 0)  # any day zero: only differences matter
HISTORY = records(T0)

NOTHING = {
    "lead_time": None,
    "lead_time_p90": None,
    "lead_time_from_run": 0,
    "changes": 0,
    "failed_changes": 0,
    "change_failure_rate": None,
    "failures": 0,
    "restored": 0,
    "time_to_restore": None,
}

CASES: list[tuple[str, timedelta, timedelta, str, dict[str, Any]]] = [
    # (name, since, until, environment, expected figures; frequency = deployments / days)
    ("whole history, staging", at(-2), at(11), S, WHOLE[S]),
    ("whole history, production", at(-2), at(11), P, WHOLE[P]),
    # d0-d10, staging: #1 #2 #4 as in the whole history (nothing outside the window)
    ("ten days, staging", at(0), at(10), S, WHOLE[S]),
    # d0-d10, production: without #7 (d-1) and #19 (d10): deploys #8 #9 #13 #15 = 4;
    # lead times 5400, 7200, 9000, 12600: median 8100, p90 = the ⌈3.6⌉ = 4th = 12600;
    # changes #8 #9 #12 #13 #15 #16 = 6, failed #9 #12 #15 #16 = 4; the same 4 failures
    (
        "ten days, production",
        at(0),
        at(10),
        P,
        {
            "deployments": 4,
            "lead_time": 8100.0,
            "lead_time_p90": 12600.0,
            "lead_time_from_run": 1,
            "changes": 6,
            "failed_changes": 4,
            "change_failure_rate": 4 / 6,
            "failures": 4,
            "restored": 4,
            "time_to_restore": 1890.0,
        },
    ),
    # d0-d2: #8 and #9 (undone by #10 at d1 03:00, inside): leads 5400, 9000, median 7200,
    # p90 the 2nd = 9000; 1 failed of 2; the one failure restored in 60 s
    (
        "two days, production",
        at(0),
        at(2),
        P,
        {
            "deployments": 2,
            "lead_time": 7200.0,
            "lead_time_p90": 9000.0,
            "lead_time_from_run": 0,
            "changes": 2,
            "failed_changes": 1,
            "change_failure_rate": 0.5,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 60.0,
        },
    ),
    # d1 00:00 to d1 03:00:30: #9 deployed (lead 9000); #10 started at 03:00, so #9 is
    # undone (1 of 1 failed), but #10 ends at 03:01, after the window: not yet restored
    (
        "until in the middle of a rollback",
        at(1),
        at(1, 3) + timedelta(seconds=30),
        P,
        {
            "deployments": 1,
            "lead_time": 9000.0,
            "lead_time_p90": 9000.0,
            "lead_time_from_run": 0,
            "changes": 1,
            "failed_changes": 1,
            "change_failure_rate": 1.0,
            "failures": 1,
            "restored": 0,
            "time_to_restore": None,
        },
    ),
    # d3-d4: no success (#13 ends d4 02:10); #11 cancelled, #12 failed: 1 of 1; #12 failed
    # at d3 02:10 and nothing restored it before d4
    (
        "a failure not yet restored",
        at(3),
        at(4),
        P,
        {
            **NOTHING,
            "deployments": 0,
            "changes": 1,
            "failed_changes": 1,
            "change_failure_rate": 1.0,
            "failures": 1,
        },
    ),
    # d3-d5: #13 (7200 from the run); changes #12 #13, 1 failed; #12 restored by #13: 86400
    (
        "a failure restored by the next deployment",
        at(3),
        at(5),
        P,
        {
            "deployments": 1,
            "lead_time": 7200.0,
            "lead_time_p90": 7200.0,
            "lead_time_from_run": 1,
            "changes": 2,
            "failed_changes": 1,
            "change_failure_rate": 0.5,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 86400.0,
        },
    ),
    # d7-d8: no change ends there (CFR unknown), but #17 undoes #15 (of d5) at d7 01:00 and
    # fails; #18 restores at 02:02: one failure, 3720 s
    (
        "an undo of an older change",
        at(7),
        at(8),
        P,
        {**NOTHING, "deployments": 0, "failures": 1, "restored": 1, "time_to_restore": 3720.0},
    ),
    # d6-d7: #16 failed without touching a host: failed and restored at its end, 0 s
    (
        "a failure that touched no host",
        at(6),
        at(7),
        P,
        {
            **NOTHING,
            "deployments": 0,
            "changes": 1,
            "failed_changes": 1,
            "change_failure_rate": 1.0,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 0.0,
        },
    ),
    # staging d4-d5: only #5 (superseded) and #6 (cancelled): nothing counts
    ("superseded and cancelled only", at(4), at(5), S, {**NOTHING, "deployments": 0}),
    # d2-d3 staging: #3 failed, rolled back by itself 2 min after its failing step
    (
        "an automatic rollback",
        at(2),
        at(3),
        S,
        {
            **NOTHING,
            "deployments": 0,
            "changes": 1,
            "failed_changes": 1,
            "change_failure_rate": 1.0,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 120.0,
        },
    ),
]


@pytest.mark.parametrize(("name", "since", "until", "env", "expected"), CASES)
def test_figures_match_the_hand_computed_ones(
    name: str, since: timedelta, until: timedelta, env: str, expected: dict[str, Any]
) -> None:
    found = {f.environment: asdict(f) for f in dora(HISTORY, T0 + since, T0 + until)}
    figures = found[env]
    days = (until - since).total_seconds() / 86400
    assert figures.pop("deployment_frequency") == pytest.approx(expected["deployments"] / days)
    figures.pop("environment")
    assert figures == pytest.approx(expected), name


def test_an_empty_window_divides_by_nothing() -> None:
    [staging, production] = dora(HISTORY, T0 + at(3), T0 + at(3))
    for env in (staging, production):
        assert env.deployment_frequency is None
        assert env.change_failure_rate is None
        assert env.time_to_restore is None
        assert env.deployments == env.changes == env.failures == 0


def test_environments_named_come_first_in_order_even_without_deployments() -> None:
    found = dora(HISTORY, T0 + at(0), T0 + at(10), ["production", "qa"])
    assert [f.environment for f in found] == ["production", "qa", "staging"]
    qa = found[1]
    assert qa.deployment_frequency == 0.0
    assert (qa.lead_time, qa.change_failure_rate, qa.time_to_restore) == (None, None, None)


def _deploy(
    id: int, committed: timedelta | None, run: timedelta | None, done: timedelta
) -> DeploymentRecord:
    return DeploymentRecord(
        id=id,
        environment="production",
        kind="deploy",
        state="succeeded",
        created_at=T0,
        started_at=T0,
        finished_at=T0 + done,
        committed_at=T0 + committed if committed is not None else None,
        run_created_at=T0 + run if run is not None else None,
    )


@pytest.mark.parametrize(
    ("deployments", "lead_time", "from_run"),
    [
        # a commit clock ahead of the server's: counted as 0, not negative
        ([_deploy(1, at(0, 2), at(0, 0), at(0, 1))], 0.0, 0),
        # neither a commit time nor a run: left out
        ([_deploy(1, None, None, at(0, 1))], None, 0),
        # the commit time wins over the run's creation when both are known
        ([_deploy(1, at(0, 0, 30), at(0, 0, 50), at(0, 1))], 1800.0, 0),
        ([_deploy(1, None, at(0, 0, 50), at(0, 1))], 600.0, 1),
    ],
)
def test_lead_time_edges(
    deployments: list[DeploymentRecord], lead_time: float | None, from_run: int
) -> None:
    [env] = dora(deployments, T0 - at(1), T0 + at(1))
    assert env.deployments == 1
    assert (env.lead_time, env.lead_time_from_run) == (lead_time, from_run)


@pytest.mark.parametrize(
    ("values", "med", "p90"),
    [
        ([], None, None),
        ([5.0], 5.0, 5.0),
        ([1.0, 2.0], 1.5, 2.0),
        ([3.0, 1.0, 2.0], 2.0, 3.0),
        ([float(v) for v in range(1, 11)], 5.5, 9.0),  # ⌈9.0⌉: the 9th of 10
        ([float(v) for v in range(1, 12)], 6.0, 10.0),  # ⌈9.9⌉: the 10th of 11
    ],
)
def test_median_and_nearest_rank_percentile(
    values: list[float], med: float | None, p90: float | None
) -> None:
    assert median(values) == med
    assert percentile(values, 0.9) == p90


@pytest.mark.parametrize(("state", "undone"), [("succeeded", 1), ("failed", 1), ("cancelled", 0)])
def test_a_rollback_aborted_by_a_person_undoes_nothing(state: str, undone: int) -> None:
    change = _deploy(1, at(0), None, at(0, 1))
    rollback = DeploymentRecord(
        id=2,
        environment="production",
        kind="rollback",
        state=state,
        created_at=T0 + at(0, 2),
        started_at=T0 + at(0, 2),
        finished_at=T0 + at(0, 2, 1),
    )
    [env] = dora([change, rollback], T0, T0 + at(1))
    assert (env.changes, env.failed_changes, env.failures) == (1, undone, undone)


# Four periods of three days ending at d11: [d-1, d2), [d2, d5), [d5, d8), [d8, d11).
# Worked out by hand from the history (dora_history.py); the sums over the periods give
# the whole history's counts (production: 6 deploys, 8 changes, 4 failed, 4 failures).
OVER_TIME: list[tuple[int, str, dict[str, Any]]] = [
    # production [d-1, d2): #7 #8 #9, leads 4800 5400 9000 (p90 the ⌈2.7⌉ = 3rd); #9 undone
    # by #10 at d1 03:00, restored at 03:01
    (
        0,
        P,
        {
            "deployments": 3,
            "lead_time": 5400.0,
            "lead_time_p90": 9000.0,
            "lead_time_from_run": 0,
            "changes": 3,
            "failed_changes": 1,
            "change_failure_rate": 1 / 3,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 60.0,
        },
    ),
    # production [d2, d5): #13 (7200 s from its run); changes #12 (failed) #13, #11 was
    # cancelled; #12 failed d3 02:10, its rollback failed, #13 restored at d4 02:10
    (
        1,
        P,
        {
            "deployments": 1,
            "lead_time": 7200.0,
            "lead_time_p90": 7200.0,
            "lead_time_from_run": 1,
            "changes": 2,
            "failed_changes": 1,
            "change_failure_rate": 0.5,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 86400.0,
        },
    ),
    # production [d5, d8): #15 (12600 s); changes #15 (undone by #17 at d7 01:00, #18 undoes
    # nothing new) and #16 (failed): both failed; restores 0 s (#16) and 3720 s (#15)
    (
        2,
        P,
        {
            "deployments": 1,
            "lead_time": 12600.0,
            "lead_time_p90": 12600.0,
            "lead_time_from_run": 0,
            "changes": 2,
            "failed_changes": 2,
            "change_failure_rate": 1.0,
            "failures": 2,
            "restored": 2,
            "time_to_restore": 1860.0,
        },
    ),
    # production [d8, d11): #19 (3600 s), nothing failed
    (
        3,
        P,
        {
            **NOTHING,
            "deployments": 1,
            "lead_time": 3600.0,
            "lead_time_p90": 3600.0,
            "changes": 1,
            "change_failure_rate": 0.0,
        },
    ),
    # staging [d-1, d2): #1 #2, leads 1200 1800: median 1500, p90 the 2nd
    (
        0,
        S,
        {
            **NOTHING,
            "deployments": 2,
            "lead_time": 1500.0,
            "lead_time_p90": 1800.0,
            "changes": 2,
            "change_failure_rate": 0.0,
        },
    ),
    # staging [d2, d5): #3 failed (rolled back by itself in 120 s), #4 (2400 s); #5
    # superseded and #6 cancelled count nowhere
    (
        1,
        S,
        {
            "deployments": 1,
            "lead_time": 2400.0,
            "lead_time_p90": 2400.0,
            "lead_time_from_run": 0,
            "changes": 2,
            "failed_changes": 1,
            "change_failure_rate": 0.5,
            "failures": 1,
            "restored": 1,
            "time_to_restore": 120.0,
        },
    ),
    # staging after d5: nothing at all, but still a period with its (empty) figures
    (2, S, {**NOTHING, "deployments": 0}),
    (3, S, {**NOTHING, "deployments": 0}),
]


@pytest.mark.parametrize(("period", "env", "expected"), OVER_TIME)
def test_figures_over_time_match_the_hand_computed_ones(
    period: int, env: str, expected: dict[str, Any]
) -> None:
    series = dora_over_time(HISTORY, until=T0 + at(11), periods=4, period_days=3)
    figures = {f.environment: asdict(f) for f in series[period].environments}[env]
    assert figures.pop("deployment_frequency") == pytest.approx(expected["deployments"] / 3)
    figures.pop("environment")
    assert figures == pytest.approx(expected)


@pytest.mark.parametrize(
    ("periods", "period_days", "bounds"),
    [
        (4, 3, [(at(-1), at(2)), (at(2), at(5)), (at(5), at(8)), (at(8), at(11))]),
        (1, 13, [(at(-2), at(11))]),
        (3, 0.5, [(at(9, 12), at(10)), (at(10), at(10, 12)), (at(10, 12), at(11))]),
        (0, 7, []),
    ],
)
def test_periods_are_consecutive_and_end_at_until(
    periods: int, period_days: float, bounds: list[tuple[timedelta, timedelta]]
) -> None:
    series = dora_over_time(HISTORY, until=T0 + at(11), periods=periods, period_days=period_days)
    assert [(p.since - T0, p.until - T0) for p in series] == bounds


def test_every_period_lists_the_same_environments() -> None:
    # staging has no deployment after d4, qa none at all: both still in every period
    series = dora_over_time(
        HISTORY, until=T0 + at(11), periods=4, period_days=3, environments=["production", "qa"]
    )
    for period in series:
        assert [f.environment for f in period.environments] == ["production", "qa", "staging"]


def test_past_periods_do_not_change_as_history_grows() -> None:
    then = [r for r in HISTORY if r.created_at < T0 + at(8)]  # before #19 existed
    earlier = dora_over_time(then, until=T0 + at(8), periods=3, period_days=3)
    later = dora_over_time(HISTORY, until=T0 + at(11), periods=4, period_days=3)
    assert earlier == later[:3]


@pytest.mark.parametrize(("periods", "period_days"), [(-1, 7), (4, 0), (4, -1)])
def test_periods_must_make_sense(periods: int, period_days: float) -> None:
    with pytest.raises(ValueError, match="periods >= 0 and period_days > 0"):
        dora_over_time(HISTORY, until=T0, periods=periods, period_days=period_days)
