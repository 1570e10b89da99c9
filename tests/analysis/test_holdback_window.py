"""The watch window judged against the holdback: shared trouble cancels, own trouble fails."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.analysis.judge import JudgeState, Look, Settings, Verdict, decide, observe
from conveyor.analysis.sequential import EProcess
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters

COMPARE = Settings(compare=True, min_requests=100)
BOUNDS = np.array(LATENCY_BUCKETS)


def grow(c: ReleaseCounters, n: int, errors: int, rng: np.random.Generator) -> ReleaseCounters:
    latencies = rng.lognormal(np.log(0.03), 0.75, n)
    within = np.searchsorted(np.sort(latencies), BOUNDS, side="right")
    return ReleaseCounters(
        requests=c.requests + n,
        errors_5xx=c.errors_5xx + errors,
        latency_buckets=[a + int(b) for a, b in zip(c.latency_buckets, within, strict=True)],
        latency_sum=c.latency_sum + float(latencies.sum()),
    )


def window(
    seed: int, holdback: float, blip_old: float, blip_new: float, seconds: int = 120
) -> tuple[bool, JudgeState]:
    """A watch window at 200 req/s, 1% 5xx, after a minute of reference; a 10-s blip of
    5xx from second 60 on the old release (`blip_old`) and the new one (`blip_new`)."""
    rng = np.random.default_rng(seed)
    old = grow(ReleaseCounters(), 12_000, int(rng.binomial(12_000, 0.01)), rng)
    new = ReleaseCounters()
    state = observe(JudgeState(), Look(at=0, canary=new, baseline=old, reference=old), COMPARE)
    for t in range(1, seconds + 1):
        blip = 60 <= t < 70
        n = int(rng.poisson(200))
        n_new = int(rng.binomial(n, 1 - holdback))
        rate_new = max(0.01, blip_new) if blip else 0.01
        rate_old = max(0.01, blip_old) if blip else 0.01
        new = grow(new, n_new, int(rng.binomial(n_new, rate_new)), rng)
        old = grow(old, n - n_new, int(rng.binomial(n - n_new, rate_old)), rng)
        state = observe(state, Look(at=float(t), canary=new, baseline=old), COMPARE)
        if decide(state, COMPARE, float(t)).verdict == Verdict.FAIL:
            return True, state
    return False, state


@pytest.mark.parametrize(
    ("holdback", "blip_old", "blip_new", "fails"),
    [
        (0.05, 0.0, 0.0, False),  # nothing happens
        (0.05, 0.3, 0.3, False),  # a shared blip: both releases alike
        (0.05, 0.1, 0.1, False),
        (0.2, 0.0, 0.3, True),  # the new release's own trouble
        (0.0, 0.3, 0.3, True),  # no holdback: the shared blip is blamed on the new release
    ],
)
def test_a_blip_fails_the_window_only_when_it_is_the_new_releases_own(
    holdback: float, blip_old: float, blip_new: float, fails: bool
) -> None:
    outcomes = [window(seed, holdback, blip_old, blip_new)[0] for seed in range(6)]
    assert outcomes == [fails] * 6


def test_the_window_shows_what_the_holdback_served_in_it() -> None:
    _, state = window(1, 0.05, 0.0, 0.0, seconds=30)
    errors = next(e for e in decide(state, COMPARE).evidence if e.check == "errors vs baseline")
    assert errors.baseline_requests == state.baseline_window.requests
    assert 0 < errors.baseline_requests < 1000  # 5% of 30 s, not the reference's 12,000


def test_a_first_look_without_a_reference_never_takes_the_baselines_whole_life() -> None:
    life = ReleaseCounters(requests=1_000_000, errors_5xx=500_000)  # another day, another load
    state = observe(JudgeState(), Look(at=0, canary=ReleaseCounters(), baseline=life), COMPARE)
    assert state.history is None


@pytest.mark.parametrize("epochs", [1, 2, 10, 1000, 10_000])
def test_the_epochs_share_one_budget_however_many_there_are(epochs: int) -> None:
    """Steps, minutes and looks only add epochs: their weights add up to at most 1, so the
    mixture is one e-process over the deployment and Ville's bound holds for all of it."""
    test = EProcess(alpha=0.0075)
    for _ in range(epochs):
        test = test.begin_epoch()
    assert test.log_e is not None and test.log_e <= 1e-12
    assert not test.rejected


@pytest.mark.parametrize(("budget", "threshold"), [(0.01, 1 / 0.007), (0.001, 1 / 0.0007)])
def test_the_budget_is_shared_by_the_tests_as_configured(budget: float, threshold: float) -> None:
    settings = Settings(compare=True, false_alarms=budget)
    state = observe(JudgeState(), Look(at=0, canary=ReleaseCounters()), settings)
    assert state.errors.threshold == pytest.approx(threshold)
    total = state.errors.alpha + state.latency.alpha + state.latency_p95.alpha
    assert total == pytest.approx(budget)
    again = observe(state, Look(at=1, canary=ReleaseCounters()), settings)
    assert again.errors.alpha == state.errors.alpha  # set once, at the first look
