"""The judge's sequential comparisons, on seeded synthetic streams (tables of cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conveyor.analysis.judge import JudgeState, Look, Settings, Verdict, decide, observe, replay
from conveyor.analysis.sequential import EProcess, Tally
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters

BOUNDS = np.array(LATENCY_BUCKETS)
COMPARE = Settings(compare=True, min_requests=100)


def grow(c: ReleaseCounters, n: int, errors: int, latencies: np.ndarray) -> ReleaseCounters:
    within = np.searchsorted(np.sort(latencies), BOUNDS, side="right")
    return ReleaseCounters(
        requests=c.requests + n,
        errors_5xx=c.errors_5xx + errors,
        latency_buckets=[a + int(b) for a, b in zip(c.latency_buckets, within, strict=True)],
        latency_sum=c.latency_sum + float(latencies.sum()),
    )


def stream(
    seed: int,
    *,
    base_errors: float = 0.01,
    canary_errors: float = 0.01,
    slower: float = 1.0,
    share: float = 0.1,
    rps: int = 100,
    seconds: int = 300,
    history: int = 30_000,
    alone_after: int | None = None,
) -> list[Look]:
    """One look a second at a canary taking `share` of `rps` requests beside its baseline.

    `alone_after`: from that second on the canary takes all the traffic (a watch window).
    """
    rng = np.random.default_rng(seed)

    def latencies(n: int, factor: float) -> np.ndarray:
        return rng.lognormal(math.log(0.05 * factor), 0.4, n)

    base = grow(
        ReleaseCounters(), history, int(rng.binomial(history, base_errors)), latencies(history, 1)
    )
    canary = ReleaseCounters()
    looks = []
    for t in range(seconds):
        n = int(rng.poisson(rps))
        alone = alone_after is not None and t >= alone_after
        nc = n if alone else int(rng.binomial(n, share))
        canary = grow(canary, nc, int(rng.binomial(nc, canary_errors)), latencies(nc, slower))
        base = grow(base, n - nc, int(rng.binomial(n - nc, base_errors)), latencies(n - nc, 1))
        looks.append(Look(at=float(t), canary=canary, baseline=base))
    return looks


def first_fail(looks: list[Look], settings: Settings = COMPARE) -> tuple[int, list[str]] | None:
    for i, j in enumerate(replay(looks, settings)):
        if j.verdict == Verdict.FAIL:
            return i, j.reasons
    return None


@pytest.mark.parametrize(
    ("case", "kwargs", "fails", "reason"),
    [
        ("identical", {}, False, ""),
        ("identical, 0.1% errors", {"base_errors": 0.001, "canary_errors": 0.001}, False, ""),
        ("+2 pp over 1%", {"canary_errors": 0.03}, True, "5xx: canary"),
        ("+1 pp over 0.1%", {"base_errors": 0.001, "canary_errors": 0.011}, True, "5xx"),
        ("p99 +50%", {"slower": 1.5}, True, "the baseline's p99"),
        ("+0.1 pp: under the margin", {"base_errors": 0.01, "canary_errors": 0.011}, False, ""),
        ("no history, +2 pp", {"canary_errors": 0.03, "history": 0}, True, "5xx"),
    ],
)
def test_comparisons(case: str, kwargs: dict[str, float], fails: bool, reason: str) -> None:
    failed = first_fail(stream(7, **kwargs))  # type: ignore[arg-type]
    assert (failed is not None) == fails, (case, failed)
    if failed:
        assert reason in " ".join(failed[1])


def test_without_compare_only_the_ceilings_count() -> None:
    looks = stream(3, canary_errors=0.03)
    assert first_fail(looks, Settings(compare=False, min_requests=100)) is None
    assert first_fail(looks, Settings(error_rate=0.02, min_requests=100)) is not None


def test_a_canary_that_turns_bad_while_alone_is_caught_against_its_baselines_history() -> None:
    good = stream(5, seconds=300, alone_after=0)
    assert first_fail(good) is None
    bad = stream(5, seconds=300, canary_errors=0.04, alone_after=0)
    failed = first_fail(bad)
    assert failed is not None and "5xx" in failed[1][0]


def test_a_rejection_stands_and_carries_its_evidence() -> None:
    looks = stream(11, canary_errors=0.05)
    judgements = list(replay(looks, COMPARE))
    first = next(i for i, j in enumerate(judgements) if j.verdict == Verdict.FAIL)
    assert all(j.verdict == Verdict.FAIL for j in judgements[first:])
    evidence = next(e for e in judgements[first].evidence if e.check == "errors vs baseline")
    assert evidence.verdict == "fail"
    assert evidence.statistic is not None and evidence.threshold is not None
    assert evidence.statistic >= evidence.threshold
    assert evidence.canary_events and evidence.baseline_requests


def test_few_requests_are_inconclusive_and_no_baseline_is_said() -> None:
    state = JudgeState()
    for t, n in enumerate((0, 10, 20)):
        state = observe(state, Look(at=t, canary=ReleaseCounters(requests=n)), COMPARE)
    j = decide(state, COMPARE)
    assert j.verdict == Verdict.INCONCLUSIVE and "20 of the 100" in j.reasons[0]
    assert any("no baseline" in e.summary for e in j.evidence)


def test_the_e_process_never_reaches_its_threshold_more_often_than_alpha() -> None:
    # 2,000 identical streams of conditional batches, looked at after every batch
    rng = np.random.default_rng(1)
    crossed = 0
    for _ in range(2000):
        e = EProcess(alpha=0.01).begin_epoch()
        seen_c, seen_b = Tally(), Tally()
        for _ in range(200):
            c = Tally(requests=10, events=int(rng.binomial(10, 0.02)))
            b = Tally(requests=90, events=int(rng.binomial(90, 0.02)))
            e = e.two_sample(c, b, seen_c, seen_b, margin=0.005, ratio=1.0)
            seen_c, seen_b = seen_c + c, seen_b + b
        crossed += e.rejected
    assert crossed <= 20  # at most 1%
