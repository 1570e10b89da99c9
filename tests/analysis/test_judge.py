from __future__ import annotations

import math

import pytest

from conveyor.analysis.judge import Settings, Verdict, judge_window
from conveyor.analysis.window import combine, delta, quantile
from conveyor.config import Analysis
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters


def counters(requests: int, errors: int = 0, latency: float = 0.004) -> ReleaseCounters:
    """`requests` requests, all of them taking `latency` seconds."""
    buckets = [requests if latency <= bound else 0 for bound in LATENCY_BUCKETS]
    return ReleaseCounters(
        requests=requests,
        errors_5xx=errors,
        latency_buckets=buckets,
        latency_sum=requests * latency,
    )


ANALYSIS = Analysis.model_validate({"error_rate": "1%", "p99": "100ms", "min_requests": 200})


@pytest.mark.parametrize(
    ("window", "verdict", "reason"),
    [
        (counters(1000), Verdict.PASS, ""),
        (counters(1000, errors=10), Verdict.PASS, ""),  # exactly at the ceiling
        (counters(1000, errors=11), Verdict.FAIL, "over the 1% ceiling"),
        (counters(100), Verdict.INCONCLUSIVE, "100 of the 200 requests"),
        (counters(0), Verdict.INCONCLUSIVE, "0 of the 200"),
        (counters(100, errors=2), Verdict.INCONCLUSIVE, "100 of the 200"),  # 2 <= 1% of 200
        (counters(100, errors=3), Verdict.FAIL, "3/100"),  # can no longer end under 1%
        (counters(1000, latency=0.2), Verdict.FAIL, "p99 latency 223 ms is over the 100 ms"),
        (counters(1000, latency=30), Verdict.FAIL, "over 10 s"),
        (counters(1000, errors=50, latency=0.2), Verdict.FAIL, "p99"),
    ],
)
def test_judge(window: ReleaseCounters, verdict: Verdict, reason: str) -> None:
    result = judge_window(window, Settings.of(ANALYSIS))
    assert result.verdict == verdict, result
    assert reason in " ".join(result.reasons)


def test_only_the_ceilings_given_are_judged() -> None:
    only_errors = Analysis.model_validate({"error_rate": "5%", "min_requests": 0})
    assert judge_window(counters(100, latency=30), Settings.of(only_errors)).verdict == Verdict.PASS
    only_p99 = Analysis.model_validate({"p99": "1s", "min_requests": 10})
    assert judge_window(counters(100, errors=100), Settings.of(only_p99)).verdict == Verdict.PASS


def test_delta_combine_and_quantile() -> None:
    before, after = counters(100, errors=1), counters(300, errors=4)
    grown = delta(before, after)
    assert (grown.requests, grown.errors_5xx) == (200, 3)
    assert grown.latency_buckets[-1] == 200
    restarted = delta(counters(500), counters(20))  # the router restarted: counts from zero
    assert restarted.requests == 20
    assert delta(None, after).requests == 300
    both = combine([counters(100, latency=0.004), counters(100, latency=0.4)])
    assert both.requests == 200
    assert quantile(both, 0.5) == 0.00445  # the bound just above 4 ms
    assert quantile(both, 0.99) == 0.445
    assert quantile(counters(10, latency=60), 0.99) == math.inf
    assert quantile(counters(0), 0.99) is None
    with pytest.raises(ValueError):
        quantile(both, 0)
