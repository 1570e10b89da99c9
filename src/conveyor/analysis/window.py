"""Counting over a window: router counters are monotonic, a judgement reads their growth."""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import sub

from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters


def delta(before: ReleaseCounters | None, after: ReleaseCounters) -> ReleaseCounters:
    """What one release's counters grew by between two readings of one router.

    A router that restarted in between starts again from zero: its counters are
    then smaller than before, and the new readings are the whole window.
    """
    if before is None or after.requests < before.requests:
        return after.model_copy()
    return ReleaseCounters(
        requests=after.requests - before.requests,
        errors_5xx=max(0, after.errors_5xx - before.errors_5xx),
        connect_failures=max(0, after.connect_failures - before.connect_failures),
        in_flight=after.in_flight,
        # map(sub): the judge takes deltas of 81 buckets several times a look
        latency_buckets=[
            d if d > 0 else 0 for d in map(sub, after.latency_buckets, before.latency_buckets)
        ],
        latency_sum=max(0.0, after.latency_sum - before.latency_sum),
    )


def combine(windows: Iterable[ReleaseCounters]) -> ReleaseCounters:
    """One release's windows on several hosts, added up."""
    total = ReleaseCounters()
    for w in windows:
        total.requests += w.requests
        total.errors_5xx += w.errors_5xx
        total.connect_failures += w.connect_failures
        total.in_flight += w.in_flight
        total.latency_sum += w.latency_sum
        total.latency_buckets = [
            a + b for a, b in zip(total.latency_buckets, w.latency_buckets, strict=True)
        ]
    return total


def error_rate(window: ReleaseCounters) -> float | None:
    return window.errors_5xx / window.requests if window.requests else None


def quantile(window: ReleaseCounters, q: float) -> float | None:
    """The latency under which a fraction q of the window's requests completed.

    Read from cumulative buckets, so it is the upper bound of the bucket the
    quantile falls in (as Prometheus' histogram_quantile would report at worst);
    past the last bucket it is infinite.
    """
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    if window.requests == 0:
        return None
    rank = q * window.requests
    for bound, count in zip(LATENCY_BUCKETS, window.latency_buckets, strict=True):
        if count >= rank:
            return bound
    return math.inf
