"""analysis.warmup: the canary's first seconds of traffic are not compared (its latency is
not judged); the 5xx ceiling applies throughout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conveyor.analysis.judge import JudgeState, Look, Settings, Verdict, decide, observe, replay
from conveyor.analysis.judge_state import warming
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters

BOUNDS = np.array(LATENCY_BUCKETS)


def grow(c: ReleaseCounters, latencies: np.ndarray, errors: int = 0) -> ReleaseCounters:
    counts = np.bincount(np.searchsorted(BOUNDS, latencies, side="left"), minlength=len(BOUNDS) + 1)
    within = np.cumsum(counts)[: len(BOUNDS)]
    return ReleaseCounters(
        requests=c.requests + len(latencies),
        errors_5xx=c.errors_5xx + errors,
        latency_buckets=[a + int(b) for a, b in zip(c.latency_buckets, within, strict=True)],
    )


def stream(
    *,
    cold_for: int,
    cold: float = 4.0,
    errors_while_cold: float = 0.0,
    idle: int = 0,
    seconds: int = 120,
    seed: int = 3,
) -> list[Look]:
    """A look a second: 40 requests to the canary, 160 to its baseline (lognormal, median
    50 ms), after `idle` seconds without canary traffic. The canary is `cold` times slower,
    with `errors_while_cold` of 5xx, for its first `cold_for` seconds of traffic."""
    rng = np.random.default_rng(seed)

    def latencies(n: int) -> np.ndarray:
        return rng.lognormal(math.log(0.05), 0.5, n)

    base = grow(ReleaseCounters(), latencies(30_000))
    canary = ReleaseCounters()
    looks = [Look(at=0.0, canary=canary, baseline=base)]
    for t in range(1, idle + seconds + 1):
        base = grow(base, latencies(160))
        if t > idle:
            warm = t - idle > cold_for
            errors = 0 if warm else round(40 * errors_while_cold)
            canary = grow(canary, latencies(40) * (1.0 if warm else cold), errors)
        looks.append(Look(at=float(t), canary=canary, baseline=base))
    return looks


def first_fail(looks: list[Look], settings: Settings) -> tuple[float, str] | None:
    for look, judgement in zip(looks, replay(looks, settings), strict=True):
        if judgement.verdict == Verdict.FAIL:
            return look.at, "; ".join(judgement.reasons)
    return None


COMPARE = Settings(compare=True)
CEILINGS = Settings(p99=0.3, error_rate=0.02)


@pytest.mark.parametrize(
    ("case", "looks", "settings", "warmup", "fails"),
    [
        # slow for its first 20 s of traffic: a regression without a warm-up
        ("cold 20 s, no warm-up", stream(cold_for=20), COMPARE, 0.0, "slower than"),
        ("cold 20 s, warm-up 30 s", stream(cold_for=20), COMPARE, 30.0, None),
        # the warm-up counts from the canary's first traffic, not from the first look
        ("idle 40 s, cold 20 s, warm-up 30 s", stream(cold_for=20, idle=40), COMPARE, 30.0, None),
        # still slow after its warm-up: compared then, and caught
        ("cold 60 s, warm-up 10 s", stream(cold_for=60), COMPARE, 10.0, "slower than"),
        # the p99 ceiling leaves the warm-up's requests out ...
        ("ceiling, cold 20 s, no warm-up", stream(cold_for=20), CEILINGS, 0.0, "p99 latency"),
        ("ceiling, cold 20 s, warm-up 30 s", stream(cold_for=20), CEILINGS, 30.0, None),
        # ... the 5xx ceiling does not
        (
            "5xx while warming up",
            stream(cold_for=20, errors_while_cold=0.1),
            CEILINGS,
            30.0,
            "error rate",
        ),
    ],
)
def test_warmup(
    case: str, looks: list[Look], settings: Settings, warmup: float, fails: str | None
) -> None:
    failed = first_fail(looks, Settings(**{**settings.__dict__, "warmup": warmup}))
    if fails is None:
        assert failed is None, case
    else:
        assert failed is not None and fails in failed[1], (case, failed)


def test_while_warming_up_it_says_so_and_is_never_conclusive() -> None:
    looks = stream(cold_for=0, seconds=40)
    settings = Settings(compare=True, warmup=30.0, min_requests=100)
    state = JudgeState()
    for look in looks[:21]:
        state = observe(state, look, settings)
    judgement = decide(state, settings, 20.0)
    assert warming(state) and judgement.verdict == Verdict.PASS and not judgement.conclusive
    warm_up = next(e for e in judgement.evidence if e.check == "warm-up")
    assert warm_up.verdict == Verdict.INCONCLUSIVE
    assert "(11 s left)" in warm_up.summary, warm_up.summary  # traffic from the look at 1 s
    assert state.canary_seen.requests == 0  # nothing compared yet
    errors = next(e for e in judgement.evidence if e.check == "errors vs baseline")
    assert errors.verdict == Verdict.INCONCLUSIVE, errors
    for look in looks[21:]:
        state = observe(state, look, settings)
    assert not warming(state)
    # compared from the look that ended the warm-up (31 s) on: 9 looks of 40 requests
    assert state.canary_seen.requests == 9 * 40
    assert all(e.check != "warm-up" for e in decide(state, settings).evidence)


def test_a_state_stored_before_warmups_goes_on_as_warm() -> None:
    looks = stream(cold_for=0, seconds=5)
    state = JudgeState()
    for look in looks:
        state = observe(state, look, COMPARE)
    stored = state.model_dump(mode="json")
    for key in ("warm_from", "warm_start", "last_at"):
        del stored[key]
    restored = JudgeState.model_validate(stored)
    assert not warming(restored)
    assert warming(JudgeState.model_validate({}))  # a new one warms up
