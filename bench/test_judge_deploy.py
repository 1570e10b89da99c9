"""The whole-deployment benchmark's synthetic traffic is what it claims."""

from __future__ import annotations

import numpy as np
import pytest
from bench.judge import Release, prom_quantile
from bench.judge_deploy import (
    HOLDBACK,
    HOLDBACK_MAX,
    REFERENCE,
    SCENARIOS,
    SLOW_START,
    STEPS,
    TURNS_BAD,
    WINDOW_START,
    Scenario,
    T,
    conveyor,
    generate,
    measured,
)

from conveyor.deploy.sizing import sized_holdback


def by_name(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def seed(n: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([7, n])


@pytest.mark.parametrize("holdback", [0.05, 0.0])
def test_each_phase_gives_the_new_release_its_share(holdback: float) -> None:
    d = generate(by_name("identical, steady 1% 5xx"), seed(1), holdback)
    new, total = d.canary.requests, d.canary.requests + d.baseline.requests
    assert len(new) == REFERENCE + T
    assert new[:REFERENCE].sum() == 0  # the reference: the previous release alone
    start = REFERENCE
    for share, seconds in [*STEPS, (1 - holdback, T - WINDOW_START)]:
        part = slice(start, start + seconds)
        assert new[part].sum() / total[part].sum() == pytest.approx(share, abs=0.01)
        start += seconds


def test_a_shared_blip_hits_both_releases_in_the_same_seconds() -> None:
    d = generate(by_name("shared blip to 10% in the window"), seed(2), 0.05)
    errors = d.canary.errors + d.baseline.errors
    total = d.canary.requests + d.baseline.requests
    rate = errors / np.maximum(total, 1)
    hit = np.flatnonzero(rate > 0.05)
    assert hit.min() >= REFERENCE + WINDOW_START and len(hit) <= 5
    both = d.baseline.errors[hit].sum() / d.baseline.requests[hit].sum()
    assert both > 0.05  # the holdback's share of it too


def test_a_release_turns_bad_when_it_says() -> None:
    d = generate(by_name("turns bad in the window: 5xx +5 pp"), seed(3), 0.05)
    assert d.fault_at == TURNS_BAD
    before = slice(REFERENCE + WINDOW_START, REFERENCE + TURNS_BAD)
    after = slice(REFERENCE + TURNS_BAD, REFERENCE + T)
    rate = d.canary.errors / np.maximum(d.canary.requests, 1)
    assert rate[before].mean() == pytest.approx(0.01, abs=0.005)
    assert rate[after].mean() == pytest.approx(0.06, abs=0.01)


def test_conveyor_passes_a_twin_and_catches_a_release_turning_bad() -> None:
    for name in ("identical, steady 1% 5xx", "shared blip to 10% in the window"):
        assert conveyor(generate(by_name(name), seed(4), 0.05)).failed_at is None
    caught = conveyor(generate(by_name("turns bad in the window: latency x2"), seed(5), 0.05))
    assert caught.at is not None and TURNS_BAD <= caught.at <= TURNS_BAD + 60


def test_a_slower_tail_moves_the_p99_alone() -> None:
    d = generate(by_name("heavy-tailed (sigma 1): p99 +20%, tail only"), seed(6), 0.05)
    span = slice(REFERENCE, REFERENCE + T)
    new, old = d.canary, d.baseline

    def quantile(r: Release, q: float) -> float:
        n = r.requests[span].sum()
        return float(prom_quantile(r.within[span].sum(axis=0), np.array([n]), q)[0])

    assert quantile(new, 0.95) == pytest.approx(quantile(old, 0.95), rel=0.03)
    assert quantile(new, 0.99) / quantile(old, 0.99) == pytest.approx(1.2, abs=0.06)
    assert quantile(new, 0.5) == pytest.approx(quantile(old, 0.5), rel=0.03)


def test_a_release_warming_up_is_slow_for_its_first_seconds_only() -> None:
    d = generate(by_name(f"warming up: 3x slower for {SLOW_START} s"), seed(7), 0.05)
    first = slice(REFERENCE, REFERENCE + SLOW_START)
    later = slice(REFERENCE + SLOW_START, REFERENCE + T)

    def mean(r: Release, part: slice) -> float:
        return float(r.latency_sum[part].sum() / r.requests[part].sum())

    assert mean(d.canary, first) / mean(d.canary, later) == pytest.approx(3.0, rel=0.25)
    assert mean(d.canary, later) == pytest.approx(mean(d.baseline, later), rel=0.05)


def test_a_ramp_goes_where_it_says() -> None:
    d = generate(by_name("traffic ramp 400 -> 50 req/s"), seed(8), 0.05)
    total = d.canary.requests + d.baseline.requests
    start = total[REFERENCE : REFERENCE + 30].mean()
    end = total[-30:].mean()
    assert start == pytest.approx(400, rel=0.1) and end == pytest.approx(50, rel=0.15)


def test_the_default_holdback_is_sized_from_the_last_canary_steps_traffic() -> None:
    d = generate(by_name("identical, steady 1% 5xx"), seed(4), 0.05)
    assert measured(d) == pytest.approx(200, rel=0.05)
    assert sized_holdback(measured(d), HOLDBACK, HOLDBACK_MAX) == 30  # 60 req/s of 200: 30%
    fast = generate(by_name("turns bad in the window: 5xx +2 pp, 400 req/s"), seed(5), 0.05)
    assert sized_holdback(measured(fast), HOLDBACK, HOLDBACK_MAX) in (15, 16)  # 60 of ~400
