"""The judge benchmark's synthetic traffic is what it claims, so it cannot measure nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from bench.judge import (
    BOUNDS,
    HISTORY,
    LONGEST,
    SCENARIOS,
    STEP,
    Scenario,
    conveyor,
    flagger,
    generate,
    kayenta,
    looks,
    prom_quantile,
)


def by_name(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def pooled(name: str, seeds: int = 3) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Canary and baseline latencies, and their 5xx rates, over a few seeds."""
    streams = [generate(by_name(name), seed) for seed in range(seeds)]
    lc = np.concatenate([s.canary.latencies for s in streams])
    lb = np.concatenate([s.baseline.latencies for s in streams])
    ec = sum(s.canary.errors.sum() for s in streams) / sum(s.canary.requests.sum() for s in streams)
    eb = sum(s.baseline.errors.sum() for s in streams) / sum(
        s.baseline.requests.sum() for s in streams
    )
    return lc, lb, ec, eb


@pytest.mark.parametrize(
    ("name", "canary_rate", "base_rate", "p99_ratio", "p50_ratio"),
    [
        ("identical, 1% 5xx", 0.01, 0.01, 1.0, 1.0),
        ("5xx +1 pp over 0.1%", 0.011, 0.001, 1.0, 1.0),
        ("5xx +2 pp over 1%", 0.03, 0.01, 1.0, 1.0),
        ("p99 +20%", 0.001, 0.001, 1.2, 1.2),
        ("p99 +50%", 0.001, 0.001, 1.5, 1.5),
        ("p99 +20%, tail only", 0.001, 0.001, 1.2, 1.0),
    ],
)
def test_realised_rates_and_p99_shift(
    name: str, canary_rate: float, base_rate: float, p99_ratio: float, p50_ratio: float
) -> None:
    lc, lb, ec, eb = pooled(name)
    assert ec == pytest.approx(canary_rate, abs=0.003)
    assert eb == pytest.approx(base_rate, abs=0.001)
    ratio = np.quantile(lc, 0.99) / np.quantile(lb, 0.99)
    assert ratio == pytest.approx(p99_ratio, rel=0.05)
    assert np.median(lc) / np.median(lb) == pytest.approx(p50_ratio, rel=0.03)


def test_counters_are_cumulative_and_agree_with_the_requests() -> None:
    stream = generate(by_name("bursty: p99 +20%"), 4)
    assert len(stream.canary.requests) == LONGEST >= STEP
    for release in (stream.canary, stream.baseline):
        c = release.cumulative()
        assert (np.diff(c.requests) >= 0).all() and (np.diff(c.errors) >= 0).all()
        assert (np.diff(c.within, axis=0) >= 0).all()  # over time
        assert (np.diff(c.within, axis=1) >= 0).all()  # over the bounds
        assert (c.within[:, -1] <= c.requests).all() and (c.errors <= c.requests).all()
        exact = [(release.latencies <= b).sum() for b in BOUNDS]
        assert c.within[-1].tolist() == exact
        assert c.latency_sum[-1] == pytest.approx(release.latencies.sum())
    share = stream.canary.requests.sum() / (
        stream.canary.requests.sum() + stream.baseline.requests.sum()
    )
    assert share == pytest.approx(0.10, abs=0.01)


def test_traffic_shapes() -> None:
    steady = generate(by_name("identical, 1% 5xx"), 1)
    total = steady.canary.requests + steady.baseline.requests
    assert total.mean() == pytest.approx(200, rel=0.02)
    assert total.var() == pytest.approx(200, rel=0.3)  # Poisson
    bursty = generate(by_name("bursty: identical, 1% 5xx"), 1)
    b_total = bursty.canary.requests + bursty.baseline.requests
    assert b_total.var() > 10 * total.var()
    low = generate(by_name("low traffic: identical, 1% 5xx"), 1)
    assert (low.canary.requests + low.baseline.requests).mean() == pytest.approx(20, rel=0.1)
    hiccups = generate(by_name("shared 5xx bursts: identical, 1%"), 1)
    rate_c = hiccups.canary.errors / np.maximum(hiccups.canary.requests, 1)
    rate_b = hiccups.baseline.errors / np.maximum(hiccups.baseline.requests, 1)
    both = (rate_b > 0.05) & (hiccups.baseline.requests > 100)
    assert both.sum() >= 5 and rate_c[both].mean() > 0.05  # shared: the canary's rises too


def test_looks_start_at_the_step_with_the_baselines_history() -> None:
    stream = generate(by_name("identical, 0.1% 5xx"), 2)
    seen = list(looks(stream))
    assert len(seen) == STEP + 1
    assert seen[0].canary.requests == 0
    assert seen[0].baseline is not None
    assert seen[0].baseline.requests == stream.history.requests.sum() > 100 * HISTORY
    # the history is one multinomial reading of the same lognormal: 5.4% above 100 ms
    above = (
        1 - seen[0].baseline.latency_buckets[list(BOUNDS).index(0.1)] / seen[0].baseline.requests
    )
    assert above == pytest.approx(0.054, abs=0.003)
    assert seen[-1].canary.requests == stream.canary.requests[:STEP].sum()
    assert all(a.canary.requests <= b.canary.requests for a, b in itertools.pairwise(seen))


def test_prom_quantile_interpolates_like_prometheus() -> None:
    within = np.zeros((3, len(BOUNDS)), dtype=int)
    within[0, list(BOUNDS).index(0.1) :] = 100  # all 100 requests in (0.0891, 0.1]
    within[1, list(BOUNDS).index(0.1) :] = 50  # half of them past the last bound
    total = np.array([100, 100, 0])
    q = prom_quantile(within, total, 0.5)
    assert q[0] == pytest.approx(0.09455)  # halfway through (0.0891, 0.1]
    assert q[1] == pytest.approx(0.1)  # rank 50 at the bucket's upper bound
    assert np.isnan(q[2])
    assert prom_quantile(within, total, 0.99)[1] == BOUNDS[-1]


def test_every_judge_catches_a_plain_regression_and_passes_a_twin() -> None:
    bad = generate(by_name("5xx +2 pp over 0.1%"), 3)
    for outcome in (conveyor(bad), flagger(bad, 10, STEP // 10), kayenta(bad, True)):
        assert outcome.failed_at is not None and outcome.failed_at > 0
    twin = generate(by_name("identical, 0.1% 5xx"), 3)
    assert kayenta(twin, False).failed_at is None
    assert flagger(twin, 60, STEP // 60).failed_at is None
