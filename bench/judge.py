"""How good the canary judge is: detection, false rollbacks and requests to decide.

Seeded synthetic traffic (one canary step, looked at every second) for a grid of
scenarios — identical releases, more 5xx, a slower p99, bursty and low traffic —
fed to conveyor's judge and, on the very same streams, to a Flagger-style
threshold judge and a Kayenta-style Mann-Whitney judge, side by side.

    make bench-judge        (or: uv run python bench/judge.py [--quick] [--seeds N] [--workers 2])

Everything is reproducible from --seed: each run's stream comes from
SeedSequence([seed, scenario, replicate]), whatever the number of workers.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from conveyor.analysis.judge import JudgeState, Look, Settings, Verdict, decide, observe
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters

BOUNDS = np.array(LATENCY_BUCKETS)
K = len(LATENCY_BUCKETS)
STEP = 300  # seconds: one canary step, looked at every second
LONGEST = (STEP // 60 + 4) * 60  # Flagger's analysis at 1m: 5 passes or 5 fails, 9 checks
HISTORY = 600  # seconds the baseline served alone before the step (its router's counters)
MEDIAN_LATENCY = 0.030  # lognormal latencies: median 30 ms, sigma 0.75 -> p99 ~172 ms,
SIGMA = 0.75  # between two bounds (158 and 177 ms, 12% apart): no judge's bound choice favoured
MARGIN = 0.005  # the worsening of the error rate every judge is told matters (0.5 pp)
P99_TOLERANCE = 1.10  # Flagger's p99 ceiling: the baseline's p99 + 10% (the smallest shift)
SETTINGS = Settings(compare=True, margin=MARGIN)  # no absolute ceilings: comparisons only


@dataclass(frozen=True)
class Traffic:
    """Requests per second to both releases; the canary takes `share` of them."""

    rps: float = 200.0
    share: float = 0.10
    burst_shape: float | None = None  # rate drawn every 10 s from Gamma(shape) around rps
    hiccups: float = 0.0  # shared 5xx bursts a second (both releases), each 5 s at 10%


@dataclass(frozen=True)
class Scenario:
    name: str
    base_errors: float
    canary_errors: float | None = None  # None: the same as the baseline's
    slower: float = 1.0  # the canary's p99 multiplied by this: every latency is, or
    tail: bool = False  # only those above the baseline's p95 are stretched (the body stays)
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def bad(self) -> bool:
        return self.canary_errors not in (None, self.base_errors) or self.slower != 1.0

    @property
    def canary_rate(self) -> float:
        return self.base_errors if self.canary_errors is None else self.canary_errors


BURSTY = Traffic(burst_shape=0.5)
HICCUPS = Traffic(hiccups=1 / 120)
LOW = Traffic(rps=20.0)

SCENARIOS = [
    Scenario("identical, 0.1% 5xx", 0.001),
    Scenario("identical, 1% 5xx", 0.01),
    Scenario("5xx +0.5 pp over 0.1%", 0.001, 0.006),
    Scenario("5xx +1 pp over 0.1%", 0.001, 0.011),
    Scenario("5xx +2 pp over 0.1%", 0.001, 0.021),
    Scenario("5xx +0.5 pp over 1%", 0.01, 0.015),
    Scenario("5xx +1 pp over 1%", 0.01, 0.02),
    Scenario("5xx +2 pp over 1%", 0.01, 0.03),
    Scenario("p99 +10%", 0.001, slower=1.1),
    Scenario("p99 +20%", 0.001, slower=1.2),
    Scenario("p99 +50%", 0.001, slower=1.5),
    Scenario("p99 +20%, tail only", 0.001, slower=1.2, tail=True),
    Scenario("bursty: identical, 1% 5xx", 0.01, traffic=BURSTY),
    Scenario("bursty: 5xx +1 pp over 1%", 0.01, 0.02, traffic=BURSTY),
    Scenario("bursty: p99 +20%", 0.001, slower=1.2, traffic=BURSTY),
    Scenario("shared 5xx bursts: identical, 1%", 0.01, traffic=HICCUPS),
    Scenario("low traffic: identical, 1% 5xx", 0.01, traffic=LOW),
    Scenario("low traffic: 5xx +1 pp over 1%", 0.01, 0.02, traffic=LOW),
    Scenario("low traffic: p99 +50%", 0.001, slower=1.5, traffic=LOW),
]


# -- synthetic traffic -----------------------------------------------------------------


@dataclass
class Release:
    """One release's traffic, per second: requests, 5xx, requests within each bound."""

    requests: np.ndarray  # (T,)
    errors: np.ndarray  # (T,)
    within: np.ndarray  # (T, K): requests of that second with latency <= each bound
    latency_sum: np.ndarray  # (T,)
    latencies: np.ndarray  # every request's latency, for the generator's own test

    def cumulative(self, start: Release | None = None) -> Release:
        """Counters as a router reports them: running sums, from `start`'s totals."""
        r0 = start.requests.sum() if start is not None else 0
        e0 = start.errors.sum() if start is not None else 0
        w0 = start.within.sum(axis=0) if start is not None else np.zeros(K, dtype=np.int64)
        s0 = start.latency_sum.sum() if start is not None else 0.0
        return Release(
            requests=r0 + np.cumsum(self.requests),
            errors=e0 + np.cumsum(self.errors),
            within=w0 + np.cumsum(self.within, axis=0),
            latency_sum=s0 + np.cumsum(self.latency_sum),
            latencies=self.latencies,
        )

    def head(self, seconds: int) -> Release:
        n = self.requests[:seconds]
        return Release(
            n,
            self.errors[:seconds],
            self.within[:seconds],
            self.latency_sum[:seconds],
            self.latencies[: int(n.sum())],
        )


@dataclass
class Stream:
    scenario: Scenario
    history: Release  # the baseline alone, before the step
    canary: Release  # per second of the step (and after it, for Flagger's longer analyses)
    baseline: Release

    def step(self) -> Stream:
        """The canary step alone: what conveyor's judge and Kayenta see."""
        return replace(self, canary=self.canary.head(STEP), baseline=self.baseline.head(STEP))


P95 = MEDIAN_LATENCY * math.exp(SIGMA * 1.6449)
P99 = MEDIAN_LATENCY * math.exp(SIGMA * 2.3263)


def _release(
    rng: np.random.Generator, n: np.ndarray, rate: np.ndarray, slower: float, tail: bool = False
) -> Release:
    seconds = len(n)
    errors = rng.binomial(n, rate)
    latencies = rng.lognormal(math.log(MEDIAN_LATENCY), SIGMA, int(n.sum()))
    if tail:  # stretch what lies above the p95 so that the p99 lands at slower × p99
        stretch = (slower * P99 - P95) / (P99 - P95)
        latencies = np.where(latencies > P95, P95 + (latencies - P95) * stretch, latencies)
    else:
        latencies = latencies * slower
    second = np.repeat(np.arange(seconds), n)
    bucket = np.searchsorted(BOUNDS, latencies, side="left")  # first bound >= latency
    counts = np.bincount(second * (K + 1) + bucket, minlength=seconds * (K + 1))
    within = np.cumsum(counts.reshape(seconds, K + 1), axis=1)[:, :K]
    sums = np.bincount(second, weights=latencies, minlength=seconds)
    return Release(n, errors, within, sums, latencies)


def _rates(rng: np.random.Generator, traffic: Traffic, seconds: int) -> np.ndarray:
    rate = np.full(seconds, traffic.rps)
    if traffic.burst_shape is not None:
        blocks = rng.gamma(traffic.burst_shape, 1 / traffic.burst_shape, -(-seconds // 10))
        rate = rate * np.repeat(blocks, 10)[:seconds]
    return rate


def _error_rates(rng: np.random.Generator, base: float, traffic: Traffic, seconds: int):
    """Each second's 5xx rate; a shared hiccup (a database's, say) raises both releases'."""
    rate = np.full(seconds, base)
    for start in np.flatnonzero(rng.random(seconds) < traffic.hiccups):
        rate[start : start + 5] = np.maximum(rate[start : start + 5], 0.10)
    return rate


def _history(rng: np.random.Generator, scenario: Scenario) -> Release:
    """The baseline's counters before the step, as one reading: only its totals are ever
    read, so its buckets are one multinomial draw (its latency sum, the expectation)."""
    n = int(rng.poisson(scenario.traffic.rps * HISTORY))
    from scipy.stats import norm  # scipy.stats: a second to import, not at collection

    cdf = norm.cdf((np.log(BOUNDS) - math.log(MEDIAN_LATENCY)) / SIGMA)
    buckets = rng.multinomial(n, np.diff(np.concatenate([[0.0], cdf, [1.0]])))
    mean = MEDIAN_LATENCY * math.exp(SIGMA**2 / 2)
    return Release(
        requests=np.array([n]),
        errors=np.array([rng.binomial(n, scenario.base_errors)]),
        within=np.cumsum(buckets)[None, :K],
        latency_sum=np.array([n * mean]),
        latencies=np.empty(0),
    )


def generate(scenario: Scenario, seed: np.random.SeedSequence | int, step: int = LONGEST) -> Stream:
    """One reproducible stream: the baseline's history, then `step` seconds side by side
    (STEP of them are the canary step; Flagger's analysis may look at the rest)."""
    rng = np.random.default_rng(seed)
    t = scenario.traffic
    history = _history(rng, scenario)
    total = rng.poisson(_rates(rng, t, step))
    n_canary = rng.binomial(total, t.share)
    shared = _error_rates(rng, 0.0, t, step)
    canary_rate = np.maximum(shared, scenario.canary_rate)
    base_rate = np.maximum(shared, scenario.base_errors)
    canary = _release(rng, n_canary, canary_rate, scenario.slower, scenario.tail)
    baseline = _release(rng, total - n_canary, base_rate, 1.0)
    return Stream(scenario, history, canary, baseline)


def counters(r: Release, i: int) -> ReleaseCounters:
    # built without validation (the values are the fields' types already): it is the
    # judge that is measured
    return ReleaseCounters.model_construct(
        requests=int(r.requests[i]),
        errors_5xx=int(r.errors[i]),
        latency_buckets=r.within[i].tolist(),
        latency_sum=float(r.latency_sum[i]),
    )


def looks(stream: Stream) -> Iterator[Look]:
    """One look a second, as the orchestrator makes them: first at the step's start."""
    stream = stream.step()
    c, b = stream.canary.cumulative(), stream.baseline.cumulative(stream.history)
    history = stream.history.cumulative()
    # the baseline's history is the judge's reference: a recent window before the step
    first = counters(history, 0)
    yield Look(at=0.0, canary=ReleaseCounters(), baseline=first, reference=first)
    for i in range(len(c.requests)):
        yield Look(at=float(i + 1), canary=counters(c, i), baseline=counters(b, i))


# -- the judges ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    failed_at: int | None  # canary requests served when it rolled back; None: it did not
    conclusive_at: int | None = None  # conveyor: requests when it would `advance: early`


def conveyor(stream: Stream) -> Outcome:
    """conveyor's judge, observe + decide every second; its first fail is the rollback."""
    state, conclusive = JudgeState(), None
    for look in looks(stream):
        state = observe(state, look, SETTINGS)
        judgement = decide(state, SETTINGS, look.at)
        if judgement.verdict == Verdict.FAIL:
            return Outcome(look.canary.requests, conclusive)
        if conclusive is None and judgement.conclusive:
            conclusive = look.canary.requests
    return Outcome(None, conclusive)


def prom_quantile(within: np.ndarray, total: np.ndarray, q: float) -> np.ndarray:
    """Prometheus' histogram_quantile over rows of cumulative buckets (NaN with no request):
    linear within the bucket the rank falls in; past the last bound, that bound."""
    within = np.atleast_2d(within).astype(float)
    total = np.atleast_1d(total).astype(float)
    rank = q * total
    i = np.minimum((within < rank[:, None]).sum(axis=1), K)
    full = np.concatenate([within, total[:, None]], axis=1)
    lower = np.where(i > 0, BOUNDS[np.maximum(i - 1, 0)], 0.0)
    below = np.where(i > 0, full[np.arange(len(i)), np.maximum(i - 1, 0)], 0.0)
    upper = BOUNDS[np.minimum(i, K - 1)]
    inside = full[np.arange(len(i)), i] - below
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lower + (upper - lower) * (rank - below) / inside
    value = np.where(i >= K, BOUNDS[-1], value)
    return np.where(total > 0, value, np.nan)


@dataclass(frozen=True)
class Thresholds:
    """Flagger's `thresholdRange.max` per metric, as a user writes them from the baseline's
    dashboards: its error rate plus the margin, its p99 plus 10%."""

    error_rate: float
    p99: float

    @classmethod
    def of(cls, stream: Stream) -> Thresholds:
        h = stream.history
        p99 = prom_quantile(h.within.sum(axis=0), np.array([h.requests.sum()]), 0.99)[0]
        return cls(error_rate=stream.scenario.base_errors + MARGIN, p99=p99 * P99_TOLERANCE)


def flagger(stream: Stream, interval: int, passes: int, threshold: int = 5) -> Outcome:
    """Flagger's analysis loop: a check every `interval` seconds of the canary's error
    rate and p99 over the last minute against fixed ceilings. A passing check advances
    (promotion after `passes` of them: the step's length when all pass), a failing one
    halts advancement and counts: `threshold` failed checks (Flagger's FailedChecks,
    which a pass does not reset) roll back. So a flapping canary is looked at for longer
    than the step. A minute without canary requests fails, as "no values found" does."""
    limits = Thresholds.of(stream)
    c = stream.canary.cumulative()
    zero = np.zeros(1, dtype=np.int64)
    req, err = np.concatenate([zero, c.requests]), np.concatenate([zero, c.errors])
    within = np.concatenate([np.zeros((1, K), dtype=np.int64), c.within])
    at = np.arange(interval, len(c.requests) + 1, interval)
    start = np.maximum(at - 60, 0)
    n = req[at] - req[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (err[at] - err[start]) / n
    p99 = prom_quantile(within[at] - within[start], n, 0.99)
    failed = (n == 0) | (rate > limits.error_rate) | (p99 > limits.p99)
    fails, passed = np.cumsum(failed), np.cumsum(~failed)
    rollback = np.flatnonzero(fails >= threshold)
    promote = np.flatnonzero(passed >= passes)
    if len(rollback) and (not len(promote) or rollback[0] < promote[0]):
        return Outcome(int(req[at[rollback[0]]]))
    assert len(promote), "the stream is too short for Flagger's analysis"
    return Outcome(None)


def _points(r: Release, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-interval error rates and p99s, as a metric store's range query returns them."""
    t = len(r.requests) // resolution * resolution
    n = r.requests[:t].reshape(-1, resolution).sum(axis=1)
    e = r.errors[:t].reshape(-1, resolution).sum(axis=1)
    w = r.within[:t].reshape(-1, resolution, K).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return e / n, prom_quantile(w, n, 0.99)


PERCENTS = np.array([0.01, 0.25, 0.75, 0.99])


def _without_outliers(x: np.ndarray) -> np.ndarray:
    """Kayenta's transform: NaNs removed, then IQRDetector(factor=3, reduceSensitivity)."""
    x = np.sort(x[~np.isnan(x)])
    if len(x) == 0:
        return x
    # np.percentile's linear interpolation, on the sorted points (np.percentile is slow)
    p01, p25, p75, p99 = np.interp(PERCENTS * (len(x) - 1), np.arange(len(x)), x)
    iqr = p75 - p25
    lo, hi = min(p25 - 3 * iqr, p01), max(p75 + 3 * iqr, p99)
    return x[(x >= lo) & (x <= hi)]


Z98 = statistics.NormalDist().inv_cdf(0.99)  # a two-sided 98% interval


def kayenta_high(canary: np.ndarray, baseline: np.ndarray) -> bool:
    """Kayenta's MannWhitneyClassifier at confLevel 0.98, tolerance 0.25, direction increase:
    High when the 98% interval of the Hodges-Lehmann shift lies above a quarter of the
    shift itself and the canary's mean is at least the baseline's."""
    x, y = _without_outliers(canary), _without_outliers(baseline)
    m, n = len(x), len(y)
    if m == 0 or n == 0 or x.mean() < y.mean() or np.array_equal(x, y):  # sorted already
        return False  # a mean ratio under 1 is never High (effectSizeThresholds 1.0)
    if len(np.unique(np.concatenate([x, y]))) == 1:
        return False
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    c = math.floor(m * n / 2 - Z98 * math.sqrt(m * n * (m + n + 1) / 12))
    if c < 1:
        return False
    lower, estimate = diffs[c - 1], float(np.median(diffs))
    if lower <= 0.25 * abs(estimate):
        return False
    # the interval above is the untied normal approximation: confirm with scipy's
    # tie-corrected test that the 98% interval excludes no shift
    from scipy.stats import mannwhitneyu

    return bool(mannwhitneyu(x, y, alternative="greater").pvalue < 0.01)


def kayenta(stream: Stream, every_point: bool, resolution: int = 10) -> Outcome:
    """Mann-Whitney of the canary's per-`resolution` points against the baseline's, per
    metric (5xx rate, p99); a High metric fails the canary (two metrics, equal weights:
    a score of 50 or less, under Kayenta's usual marginal 75). Judged once at the end of
    the step, or again at every new point (each judgement a fresh fixed-sample test)."""
    stream = stream.step()
    c_err, c_p99 = _points(stream.canary, resolution)
    b_err, b_p99 = _points(stream.baseline, resolution)
    served = np.cumsum(stream.canary.requests)
    ends = range(1, len(c_err) + 1) if every_point else [len(c_err)]
    for k in ends:
        if kayenta_high(c_err[:k], b_err[:k]) or kayenta_high(c_p99[:k], b_p99[:k]):
            return Outcome(int(served[k * resolution - 1]))
    return Outcome(None)


JUDGES = {
    "conveyor 1s": conveyor,
    "Flagger 1m": lambda s: flagger(s, interval=60, passes=STEP // 60),
    "Flagger 10s": lambda s: flagger(s, interval=10, passes=STEP // 10),
    "Kayenta end": lambda s: kayenta(s, every_point=False),
    "Kayenta 10s": lambda s: kayenta(s, every_point=True),
}


# -- running and reporting -------------------------------------------------------------


def run(task: tuple[int, int, int]) -> tuple[int, dict[str, Outcome], int]:
    seed, index, replicate = task
    stream = generate(SCENARIOS[index], np.random.SeedSequence([seed, index, replicate]))
    served = int(stream.canary.requests[:STEP].sum())
    return index, {name: judge(stream) for name, judge in JUDGES.items()}, served


def _cell(outcomes: list[Outcome]) -> str:
    fails = [o.failed_at for o in outcomes if o.failed_at is not None]
    rate = 100 * len(fails) / len(outcomes)
    median = f"{statistics.median(fails):>6,.0f}" if fails else f"{'—':>6}"
    return f"{rate:5.1f}% {median}"


def report(
    results: dict[int, list[dict[str, Outcome]]],
    served: dict[int, list[int]],
    seconds: float,
    args: argparse.Namespace,
) -> None:
    names = list(JUDGES)
    width = max(len(s.name) for s in SCENARIOS)
    head = f"{'scenario':<{width}}  {'seeds':>5}  {'canary req':>10}  " + "  ".join(
        f"{n:>14}" for n in names
    )
    print(head)
    print("-" * len(head))
    for i, s in enumerate(SCENARIOS):
        rows = results[i]
        cells = "  ".join(f"{_cell([r[n] for r in rows]):>14}" for n in names)
        mean = statistics.mean(served[i])
        print(f"{s.name:<{width}}  {len(rows):>5}  {mean:>10,.0f}  {cells}")
    print(
        "\ncells: share of seeds rolled back (detection on a worse canary, false rollback on "
        "an identical one)\n       and the median canary requests served at the rollback; "
        "'canary req': served in the whole step"
    )
    early = []
    for i, s in enumerate(SCENARIOS):
        if not s.bad:
            at = [r["conveyor 1s"].conclusive_at for r in results[i]]
            done = [a for a in at if a is not None]
            median = f", median {statistics.median(done):,.0f} canary requests" if done else ""
            early.append(f"  {s.name:<{width}}  {100 * len(done) / len(at):5.1f}%{median}")
    print(
        "\nidentical releases: the share of seeds whose conveyor judgement became conclusive "
        "within the step\n(`advance: early` would move on then):"
    )
    print("\n".join(early))
    goals(results)
    print(
        f"\n{sum(len(r) for r in results.values())} runs in {seconds:.0f} s "
        f"({args.workers} worker{'s' if args.workers > 1 else ''}), seed {args.seed}"
    )


def _by_name(name: str) -> int:
    return next(i for i, s in enumerate(SCENARIOS) if s.name == name)


def goals(results: dict[int, list[dict[str, Outcome]]]) -> None:
    """The issue's goals for conveyor's judge, with the other judges' figures beside."""

    def rate(name: str, judge: str) -> tuple[int, int]:
        rows = results[_by_name(name)]
        return sum(r[judge].failed_at is not None for r in rows), len(rows)

    def median(name: str, judge: str) -> float:
        rows = results[_by_name(name)]
        fails = [r[judge].failed_at for r in rows if r[judge].failed_at is not None]
        return statistics.median(fails) if len(fails) > len(rows) / 2 else math.inf

    def others(figure: Callable[[str], str]) -> str:
        return "; ".join(f"{j} {figure(j)}" for j in list(JUDGES)[1:])

    def pct(name: str) -> Callable[[str], str]:
        return lambda j: f"{100 * rate(name, j)[0] / rate(name, j)[1]:.1f}%"

    print("\ngoals, for conveyor's judge (the others' figures in brackets):")
    for name in ("5xx +1 pp over 0.1%", "5xx +1 pp over 1%", "p99 +20%"):
        k, n = rate(name, "conveyor 1s")
        verdict = "PASS" if k >= 0.99 * n else "MISS"
        print(f"  {verdict}  ≥ 99% detection, {name}: {100 * k / n:.1f}% ({k}/{n})")
        print(f"        [{others(pct(name))}]")
    identical = [s.name for s in SCENARIOS if not s.bad]
    for name in identical:
        k, n = rate(name, "conveyor 1s")
        verdict = "PASS" if k <= 0.01 * n else "MISS"
        print(f"  {verdict}  ≤ 1% false rollbacks, {name}: {100 * k / n:.1f}% ({k}/{n})")
        print(f"        [{others(pct(name))}]")
    k = sum(rate(name, "conveyor 1s")[0] for name in identical)
    n = sum(rate(name, "conveyor 1s")[1] for name in identical)
    verdict = "PASS" if k <= 0.01 * n else "MISS"
    print(
        f"  {verdict}  ≤ 1% false rollbacks, all identical releases: {100 * k / n:.2f}% ({k}/{n})"
    )
    name = "5xx +1 pp over 1%"
    m = median(name, "conveyor 1s")
    verdict = "PASS" if m <= 2000 else "MISS"
    print(f"  {verdict}  median decision ≤ 2,000 canary requests, {name}: {m:,.0f}")
    print(f"        [{others(lambda j: f'{median(name, j):,.0f}')}]")


def describe(identical: int, bad: int) -> None:
    t = Traffic()
    ceiling = Thresholds.of(generate(SCENARIOS[0], 0)).p99
    print(
        f"""\
One canary step of {STEP} s, looked at every second: {t.rps:g} req/s, {t.share:.0%} on the \
canary; the baseline served
{HISTORY} s alone before. Latencies lognormal (median {MEDIAN_LATENCY * 1000:g} ms, sigma \
{SIGMA}: p99 {P99 * 1000:.0f} ms) binned into LATENCY_BUCKETS;
a slower canary has every latency multiplied ("tail only": those above the p95 stretched).
bursty: the rate drawn every 10 s from Gamma(shape {BURSTY.burst_shape}) around the mean; \
shared 5xx bursts: both
releases at 10% for 5 s, one every {1 / HICCUPS.hiccups:.0f} s on average; low traffic: \
{LOW.rps:g} req/s.
Judges, on the same streams:
  conveyor 1s  Settings(compare=True, margin={MARGIN}), no absolute ceilings: observe + decide \
every second
  Flagger      the canary's error rate and p99 (histogram_quantile) over the last 1m, every 1m \
(the default)
               or 10s (the minimum) against ceilings of the baseline's rate + {MARGIN * 100:g} \
pp and its p99 × {P99_TOLERANCE};
               a pass advances (promotion after {STEP} s of passes), 5 failed checks roll back \
(threshold 5,
               the docs' example): a flapping canary is looked at past the step (up to \
{LONGEST} s at 1m).
               The p99 ceiling is {ceiling * 1000:.0f} ms: histogram_quantile reads the \
baseline's p99 as {ceiling / P99_TOLERANCE * 1000:.0f} ms
               from the buckets, about 12% apart (the true one is {P99 * 1000:.0f} ms)
  Kayenta      Mann-Whitney per metric (5xx rate, p99) on 10 s points, 98% confidence, \
tolerance 0.25
               (NetflixACAJudge): once at the end of the step, or again at every new point
Seeds: {identical} per identical scenario, {bad} per worse one.
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, help="seeds per scenario (default 200 / 100)")
    parser.add_argument("--quick", action="store_true", help="20 seeds per scenario: a smoke")
    parser.add_argument("--workers", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    identical, bad = (20, 20) if args.quick else (200, 100)
    if args.seeds:
        identical = bad = args.seeds
    describe(identical, bad)
    tasks = [
        (args.seed, i, r)
        for i, s in enumerate(SCENARIOS)
        for r in range(bad if s.bad else identical)
    ]
    results: dict[int, list[dict[str, Outcome]]] = {i: [] for i in range(len(SCENARIOS))}
    served: dict[int, list[int]] = {i: [] for i in range(len(SCENARIOS))}
    started = time.perf_counter()
    if args.workers == 1:
        outcomes = map(run, tasks)
        for index, outcome, n in outcomes:
            results[index].append(outcome)
            served[index].append(n)
    else:
        with multiprocessing.Pool(args.workers) as pool:
            for index, outcome, n in pool.imap(run, tasks, chunksize=8):
                results[index].append(outcome)
                served[index].append(n)
    report(results, served, time.perf_counter() - started, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
