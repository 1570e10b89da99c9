"""The canary judge's terms: its settings, its looks, its memory between looks (JudgeState),
the verdicts, and the counting its tests share (sums of counters, slow requests, the
baseline's slow bound, the requests a test needs). conveyor.analysis.judge decides with them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, model_validator

from conveyor.analysis.sequential import ALPHA, ALPHA_HISTORY, EProcess, Tally
from conveyor.analysis.window import quantile
from conveyor.config import Analysis
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters

EPOCH = 60.0  # seconds: a long window starts a fresh epoch of the tests this often
# seconds: the canary's most recent batches, one of the estimates the tests' alternative
# may take (the worst of recent, epoch and whole): a release that turns bad in the middle
# of an epoch shows there within seconds, not diluted by the epoch's healthy minute
RECENT = 10.0
MIN_BASELINE = 200  # requests of the baseline before its p99 means anything
# requests of the baseline before its 5xx rate is bounded for the watch window's comparison
# (the canary alone, against an upper confidence bound of the baseline's rate): the bound
# widens as they get fewer (2 errors in 172: at most 6.2%; none in 20: at most 26%), so a
# short history only takes a bigger worsening to fail; below 20 it says almost nothing
MIN_HISTORY = 20
P99_SHARE = 0.01  # the tail test: slow = above the baseline's p99 ...
# ... tuned to 1.5 times the baseline's share of slow requests: what a p99 20% slower does
# there when only the tail moves (for lognormal latencies of sigma 0.75 to 1: 1.6 to 1.5
# times); a larger worsening is followed above that by the plug-in's estimate
P99_RATIO = 1.5
P95_SHARE = 0.05  # the body test: slow = above the baseline's p95 ...
# ... tuned to 1.5 times its share: what a whole distribution 20% slower does there (for
# lognormal latencies of sigma 0.5 to 1, the usual spread of a web service's: 2 to 1.4
# times); a larger worsening is followed above that by the plug-in's estimate
P95_RATIO = 1.5
# the budget of 1% false alarms, shared: errors matter most, latency shifts show sooner
ERRORS_ALPHA = ALPHA * 0.75
LATENCY_ALPHA = ALPHA * 0.125  # each of the two latency tests


class Verdict:
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Settings:
    """What the judge checks; `Settings.of(analysis)` reads a conveyor.yml `analysis`."""

    error_rate: float | None = None
    p99: float | None = None
    compare: bool = False
    margin: float = 0.005
    min_requests: int = 100
    # the chance the comparisons ever fail an identical release over a whole deployment
    false_alarms: float = ALPHA
    warmup: float = 0.0  # seconds from the canary's first traffic that are not compared
    # epochs of comparison the deployment plans (its judged steps' pauses and watch
    # window, `planned_epochs`): the tests spread their later epochs' mass over them
    planned: int = 0

    @classmethod
    def of(cls, analysis: Analysis) -> Settings:
        return cls(
            error_rate=analysis.error_rate,
            p99=analysis.p99,
            compare=analysis.compare == "baseline",
            margin=analysis.margin,
            min_requests=analysis.min_requests,
            false_alarms=analysis.false_alarms,
            warmup=analysis.warmup,
        )


class Look(BaseModel):
    """Cumulative counters of both releases, read at one moment (unix time `at`).

    `reference`, on a judge's first look, is what the baseline served over a recent
    window just before (measured by the engine from the deployment's start): the only
    past the comparisons use besides what it serves from then on. Never the release's
    whole life, whose counters average over other days, hours and loads.
    """

    at: float
    canary: ReleaseCounters
    baseline: ReleaseCounters | None = None
    reference: ReleaseCounters | None = None


def zero() -> ReleaseCounters:
    return ReleaseCounters()


class JudgeState(BaseModel):
    """Everything the judge remembers between looks."""

    looks: int = 0
    canary_last: ReleaseCounters | None = None
    baseline_last: ReleaseCounters | None = None
    window_start: ReleaseCounters | None = None  # canary when the window (step) began
    epoch_start: ReleaseCounters | None = None  # canary when the epoch began
    epoch_at: float | None = None
    history: ReleaseCounters | None = None  # the baseline's recent window before the first look
    baseline_window: ReleaseCounters = Field(default_factory=zero)  # ... in this window (step)
    baseline_seen: ReleaseCounters = Field(default_factory=zero)  # ... and since, side by side
    canary_epoch: ReleaseCounters = Field(default_factory=zero)  # canary batches this epoch
    canary_seen: ReleaseCounters = Field(default_factory=zero)  # ... and since the first look
    canary_recent: ReleaseCounters = Field(default_factory=zero)  # batches of the last RECENT s
    canary_before_recent: ReleaseCounters = Field(default_factory=zero)  # ... the RECENT s before
    recent_at: float | None = None
    errors: EProcess = Field(default_factory=lambda: EProcess(alpha=ERRORS_ALPHA))
    latency: EProcess = Field(default_factory=lambda: EProcess(alpha=LATENCY_ALPHA))  # p99
    latency_p95: EProcess = Field(default_factory=lambda: EProcess(alpha=LATENCY_ALPHA))
    bound: float | None = None  # the p99 test's latency bound, at the last batch
    bound_p95: float | None = None  # ... and the p95 test's (None: no bucket stands for it)
    new_window: bool = True
    last_at: float = 0.0  # the last look's time
    warm_from: float | None = None  # when the canary was first seen with traffic
    warm_start: ReleaseCounters | None = None  # the canary when its warm-up ended (None: not yet)

    @model_validator(mode="before")
    @classmethod
    def _warm_before(cls, data: Any) -> Any:
        """A state stored before warm-ups were (looks taken, no warm_from) was comparing
        already: it goes on as warm, from its last look."""
        if isinstance(data, dict) and data.get("looks") and "warm_from" not in data:
            data = {**data, "warm_from": 0.0, "warm_start": data.get("canary_last") or {}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _one_latency_test_before(cls, data: Any) -> Any:
        """A state stored when one latency test had a quarter of the budget goes on with
        an eighth: a stricter threshold keeps that test valid, and the two within it."""
        if isinstance(data, dict) and "latency" in data and "latency_p95" not in data:
            latency = data["latency"]
            if isinstance(latency, dict):
                data = {**data, "latency": {**latency, "alpha": LATENCY_ALPHA}}
        return data


def planned_epochs(pauses: Iterable[float]) -> int:
    """The epochs a deployment's judged steps take: one at each step's start and one a
    minute (EPOCH) after within it."""
    return sum(max(1, math.ceil(p / EPOCH - 1e-9)) for p in pauses if p > 0)


def with_budget(state: JudgeState, alpha: float, planned: int = 0) -> JudgeState:
    """A judge that has not looked yet, its tests sharing `alpha` as the default 1% is
    shared (errors ¾, each latency test ⅛; the baseline's bound a fifteenth of each), and
    the deployment's `planned` epochs."""
    if alpha == ALPHA and planned == 0:
        return state

    def test(share: float) -> EProcess:
        return EProcess(alpha=alpha * share, history=ALPHA_HISTORY * alpha / ALPHA, planned=planned)

    latency = LATENCY_ALPHA / ALPHA
    return state.model_copy(
        update={
            "errors": test(ERRORS_ALPHA / ALPHA),
            "latency": test(latency),
            "latency_p95": test(latency),
        }
    )


def add(a: ReleaseCounters, b: ReleaseCounters) -> ReleaseCounters:
    return ReleaseCounters(
        requests=a.requests + b.requests,
        errors_5xx=a.errors_5xx + b.errors_5xx,
        connect_failures=a.connect_failures + b.connect_failures,
        latency_buckets=list(map(operator.add, a.latency_buckets, b.latency_buckets)),
        latency_sum=a.latency_sum + b.latency_sum,
    )


def errors(c: ReleaseCounters) -> Tally:
    return Tally(requests=c.requests, events=c.errors_5xx)


def slow(c: ReleaseCounters, bound: float) -> Tally:
    """Requests slower than `bound` (a LATENCY_BUCKETS bound)."""
    within = c.latency_buckets[LATENCY_BUCKETS.index(bound)]
    return Tally(requests=c.requests, events=max(0, c.requests - within))


def slow_bound(
    baseline: ReleaseCounters, share: float = P99_SHARE, below: float | None = None
) -> float | None:
    """The bucket bound that stands for the baseline's p99 (`share` 1%) or p95 (5%):
    slow requests are those above it.

    The bounds are about 12% apart (LATENCY_BUCKETS), so the bound is the one whose
    share of the baseline above it is closest to `share` (on a log scale; a histogram
    converted from the legacy layout has fewer distinct ones to choose from)
    among those `below` the p99's bound with a share in range (0.1% to 20% for the
    p99, 1% to 25% for the p95); failing that, for the p99, the one just above it.
    """
    if baseline.requests < MIN_BASELINE:
        return None
    lowest, highest = (share / 10, 0.2) if below is None else (share / 5, share * 5)
    best: tuple[float, float] | None = None
    for bound, within in zip(LATENCY_BUCKETS, baseline.latency_buckets, strict=True):
        if below is not None and bound >= below:
            break
        fraction = (baseline.requests - within) / baseline.requests
        if lowest <= fraction <= highest:
            distance = abs(math.log(fraction / share))
            if best is None or distance < best[0]:
                best = (distance, bound)
    if best is not None:
        return best[1]
    if below is not None:
        return None
    p99 = quantile(baseline, 1 - share)
    return None if p99 is None or math.isinf(p99) else p99


def warming(state: JudgeState) -> bool:
    """Whether the canary is still in its warm-up: not compared, its latency not judged."""
    return state.warm_start is None


def warm_left(state: JudgeState, settings: Settings, at: float) -> float:
    """Seconds of the warm-up still to run at `at` (all of it before any traffic)."""
    if state.warm_from is None:
        return settings.warmup
    return max(0.0, state.warm_from + settings.warmup - at)


def needed(baseline_rate: float, margin: float, ratio: float, alpha: float) -> int:
    """Canary requests after which a worsening to (rate·ratio + margin) would most likely
    have been caught: log(1/alpha) over the information one request carries about it."""
    p0 = min(max(baseline_rate, 1e-6), 0.5)
    p1 = min(p0 * ratio + margin, 0.999)
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    return math.ceil(math.log(1 / alpha) / kl) if kl > 0 else 0
