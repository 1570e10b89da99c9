"""The latency histogram's layout on the wire: fine bounds, and the legacy layout converted."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from conveyor.protocol import (
    LATENCY_BUCKETS,
    LEGACY_LATENCY_BUCKETS,
    AppMetrics,
    ReleaseCounters,
    RouterMetrics,
)


def test_the_bounds_are_about_12_percent_apart_and_hold_the_legacy_ones() -> None:
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert min(ratios) > 1.11 and max(ratios) < 1.13
    assert (LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1]) == (0.001, 10.0)
    assert set(LEGACY_LATENCY_BUCKETS) <= set(LATENCY_BUCKETS)


@pytest.mark.parametrize(
    ("legacy", "at", "expected"),
    [
        # exact at a legacy bound
        ([0] * 6 + [7] * 7, 0.1, 7),
        ([0] * 6 + [7] * 7, 0.0891, 0),  # between two: the count at the legacy bound below
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 0.00281, 2),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 10.0, 13),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 8.91, 12),
    ],
)
def test_a_legacy_histogram_converts_onto_the_fine_bounds(
    legacy: list[int], at: float, expected: int
) -> None:
    counters = ReleaseCounters.model_validate({"requests": 13, "latency_buckets": legacy})
    assert len(counters.latency_buckets) == len(LATENCY_BUCKETS)
    assert counters.latency_buckets[LATENCY_BUCKETS.index(at)] == expected


def test_a_histogram_of_another_length_is_refused_with_the_lengths_expected() -> None:
    with pytest.raises(ValidationError, match="expected 81 cumulative latency counts"):
        ReleaseCounters.model_validate({"requests": 1, "latency_buckets": [1] * 20})


def test_a_metrics_report_stays_small() -> None:
    """The finer buckets made a release's counters about 6 times larger on the wire: with 10
    apps of 10 releases each (routers never forget one), a report is under 100 kB."""
    big = 10**9
    counters = ReleaseCounters(
        requests=big, errors_5xx=big // 100, latency_buckets=[big - 81 + i for i in range(81)]
    )
    assert len(counters.model_dump_json()) < 1000
    report = RouterMetrics(
        backend="embedded",
        started_at=0.0,
        apps={
            f"app-{a}": AppMetrics(app=f"app-{a}", releases={f"r{r}": counters for r in range(10)})
            for a in range(10)
        },
    )
    assert len(report.model_dump_json()) < 100_000
