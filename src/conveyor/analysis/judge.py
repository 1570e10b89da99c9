"""The canary judge: pass, fail or inconclusive, with its evidence.

A pure API over *looks*: cumulative counters of the canary (the new release) and
of the baseline (the release it replaces, serving at the same time), as a metric
source reports them. Feed looks one by one with `observe` and ask `decide` at
any moment, or replay a recorded stream with `replay` / `judge`:

    from conveyor.analysis.judge import Look, Settings, judge
    settings = Settings(error_rate=0.01, p99=1.0, compare=True, min_requests=200)
    verdict = judge([Look(at=t, canary=c, baseline=b) for t, c, b in recorded], settings)
    print(verdict.verdict, [e.summary for e in verdict.evidence])

It decides on:
- the absolute ceilings of `analysis` (`error_rate`, `p99`) over the current
  window (the step, and its last minute) — with `min_requests` below which it
  says inconclusive, except that errors already past the ceiling however many
  requests still come fail at once;
- with `compare: baseline`, sequential tests (see sequential.py): more 5xx on the
  canary than on the baseline by `margin` (default 0.5 percentage point), and, for
  latency, two exceedance tests: more canary requests than the baseline's share
  above its p99 and above its p95 (1.5 times as many is the worsening both are
  tuned to). The histogram's bounds are about 12% apart, so each bound stands for its
  quantile within a few percent: a slowdown of the whole distribution moves many
  requests past the p95's bound long before it moves enough past the p99's, while
  a slowdown of the tail alone shows only at the p99's. Any test may fail at any
  look, however often one looks; their false-alarm budgets add up to at most 1%
  over the deployment (errors 3/4 of it, each latency test 1/8);
- with `warmup` (seconds), nothing of the canary's first seconds of traffic is
  compared nor its latency judged: the tests take their first batch after it, and the
  p99 ceiling leaves its requests out (the error-rate ceiling counts them).

The state is a plain pydantic model, stored between looks (the orchestrator keeps
it in the step's record, so a restarted server continues the same tests). Its terms
(Settings, Look, JudgeState, Verdict, the shared counting) live in judge_state.py and are
importable from here as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from conveyor.analysis.judge_state import (
    EPOCH,
    MIN_BASELINE,
    MIN_HISTORY,
    P95_RATIO,
    P95_SHARE,
    P99_RATIO,
    RECENT,
    JudgeState,
    Look,
    Settings,
    Verdict,
    add,
    errors,
    needed,
    slow,
    slow_bound,
    warm_left,
    warming,
    with_budget,
    zero,
)

# re-exported (named here before judge_state.py held them), unused in this module
from conveyor.analysis.judge_state import (
    ERRORS_ALPHA as ERRORS_ALPHA,
)
from conveyor.analysis.judge_state import (
    LATENCY_ALPHA as LATENCY_ALPHA,
)
from conveyor.analysis.judge_state import (
    P99_SHARE as P99_SHARE,
)
from conveyor.analysis.sequential import EProcess, Tally
from conveyor.analysis.window import delta, error_rate, quantile
from conveyor.protocol import Evidence, Judgement, ReleaseCounters


def start_window(state: JudgeState) -> JudgeState:
    """A new step: the ceilings count again from the next look; the tests go on."""
    return state.model_copy(update={"new_window": True})


def observe(state: JudgeState, look: Look, settings: Settings) -> JudgeState:
    """Fold one look into the state (a new one: `state` and `look` are left as they were)."""
    # shallow (deep was half the judge's time): the judge replaces fields, never changes
    # one in place (it builds new counters and tests), so old and new may share them
    s = state.model_copy()
    if s.looks == 0:
        s = with_budget(s, settings.false_alarms, settings.planned)
    s.looks += 1
    canary, baseline = look.canary, look.baseline
    if s.looks == 1 and look.reference is not None:
        s.history = look.reference
    # a batch is compared only if the warm-up had ended at the look that began it
    warm = not warming(s)
    if not warm:
        if s.warm_from is None and canary.requests > 0:
            s.warm_from = look.at
        if settings.warmup <= 0 or warm_left(s, settings, look.at) <= 0:
            s.warm_start = canary
    if s.canary_last is not None and s.baseline_last is not None and baseline is not None:
        batch_c = delta(s.canary_last, canary)
        batch_b = delta(s.baseline_last, baseline)
        if settings.compare and warm:
            _test(s, batch_c, batch_b, settings.margin)
        s.baseline_seen = add(s.baseline_seen, batch_b)
        s.baseline_window = add(s.baseline_window, batch_b)
        if warm:
            s.canary_epoch = add(s.canary_epoch, batch_c)
            s.canary_seen = add(s.canary_seen, batch_c)
            s.canary_recent = add(s.canary_recent, batch_c)
    if s.recent_at is None or look.at - s.recent_at >= RECENT:
        s.canary_before_recent, s.canary_recent = s.canary_recent, zero()
        s.recent_at = look.at
    if s.new_window or s.epoch_at is None or look.at - s.epoch_at >= EPOCH:
        if s.new_window:
            s.window_start = canary
            s.baseline_window = zero()
            s.new_window = False
        s.epoch_start, s.epoch_at = canary, look.at
        s.canary_epoch = zero()
        s.errors = s.errors.begin_epoch()
        s.latency = s.latency.begin_epoch()
        s.latency_p95 = s.latency_p95.begin_epoch()
    s.canary_last, s.last_at = canary, look.at
    s.baseline_last = baseline if baseline is not None else s.baseline_last
    return s


def _worse(*estimates: Tally) -> Tally:
    """The canary's estimate for the plug-in: the worst of its last seconds', this epoch's
    and the whole judge's, so that a release that turned bad late is followed at once and
    a steady one by the steadiest estimate. Only past batches: the test stays valid."""
    return max(estimates, key=lambda t: t.smoothed())


def _recent(s: JudgeState) -> ReleaseCounters:
    return add(s.canary_before_recent, s.canary_recent)


def _baseline_all(s: JudgeState) -> ReleaseCounters:
    return add(s.history or zero(), s.baseline_seen)


def _test(
    s: JudgeState, batch_c: ReleaseCounters, batch_b: ReleaseCounters, margin_e: float
) -> None:
    known = _baseline_all(s)
    if batch_b.requests > 0:
        s.errors = s.errors.two_sample(
            errors(batch_c),
            errors(batch_b),
            _worse(errors(_recent(s)), errors(s.canary_epoch), errors(s.canary_seen)),
            errors(known),
            margin=margin_e,
            ratio=1.0,
        )
    elif known.requests >= MIN_HISTORY:
        s.errors = s.errors.one_sample(
            errors(batch_c),
            _worse(errors(_recent(s)), errors(s.canary_epoch), errors(s.canary_seen)),
            errors(known).upper(s.errors.history),
            margin=margin_e,
            ratio=1.0,
        )
    # a rejection stands, and so does the bound it was reached at (its evidence shows it)
    if not s.latency.rejected:
        s.bound = slow_bound(known)
    if not s.latency_p95.rejected:
        s.bound_p95 = slow_bound(known, P95_SHARE, below=s.bound) if s.bound else None
    if s.bound is not None:
        s.latency = _latency(s, s.latency, s.bound, P99_RATIO, batch_c, batch_b, known)
    if s.bound_p95 is not None:
        s.latency_p95 = _latency(s, s.latency_p95, s.bound_p95, P95_RATIO, batch_c, batch_b, known)


def _latency(
    s: JudgeState,
    test: EProcess,
    bound: float,
    ratio: float,
    batch_c: ReleaseCounters,
    batch_b: ReleaseCounters,
    known: ReleaseCounters,
) -> EProcess:
    """One batch of a latency test: requests slower than `bound`, canary vs baseline."""
    before = _worse(
        slow(_recent(s), bound), slow(s.canary_epoch, bound), slow(s.canary_seen, bound)
    )
    if batch_b.requests > 0:
        return test.two_sample(
            slow(batch_c, bound),
            slow(batch_b, bound),
            before,
            slow(known, bound),
            margin=0.0,
            ratio=ratio,
        )
    return test.one_sample(
        slow(batch_c, bound),
        before,
        slow(known, bound).upper(test.history),
        margin=0.0,
        ratio=ratio,
    )


def decide(state: JudgeState, settings: Settings, at: float | None = None) -> Judgement:
    """The verdict at this moment, with one piece of evidence per check."""
    canary = state.canary_last or zero()
    window = delta(state.window_start, canary) if state.window_start else zero()
    epoch = delta(state.epoch_start, canary) if state.epoch_start else zero()
    warm = not warming(state)
    evidence: list[Evidence] = []
    evidence += _ceilings(window, settings, "window", _warmed(state, window, canary))
    if epoch.requests < window.requests:
        last = _ceilings(epoch, settings, "last minute", _warmed(state, epoch, canary))
        evidence += [e for e in last if e.verdict == "fail"]
    if not warm and (settings.compare or settings.p99 is not None):
        left = warm_left(state, settings, state.last_at if at is None else at)
        evidence.append(
            Evidence(
                check="warm-up",
                verdict=Verdict.INCONCLUSIVE,
                summary=f"warming up: the first {settings.warmup:g} s of the canary's traffic "
                f"are not compared ({left:.0f} s left); the 5xx ceiling applies",
                canary_requests=window.requests,
            )
        )
    if settings.compare:  # while warming up: what they need, none compared yet
        evidence += _comparisons(state, settings)
    failed = [e for e in evidence if e.verdict == Verdict.FAIL]
    rate, p99 = error_rate(window), quantile(window, 0.99)
    if failed:
        verdict = Verdict.FAIL
        reasons = [e.summary for e in failed]
    elif window.requests < settings.min_requests:
        verdict = Verdict.INCONCLUSIVE
        reasons = [f"{window.requests} of the {settings.min_requests} requests needed to judge"]
    else:
        verdict, reasons = Verdict.PASS, []
    return Judgement(
        verdict=verdict,
        requests=window.requests,
        error_rate=rate,
        p99=p99,
        reasons=reasons,
        evidence=evidence,
        conclusive=verdict == Verdict.PASS and all(e.verdict == Verdict.PASS for e in evidence),
        at=at,
    )


def _ms(seconds: float) -> str:
    return "over 10 s" if math.isinf(seconds) else f"{seconds * 1000:g} ms"


def _warmed(
    state: JudgeState, window: ReleaseCounters, canary: ReleaseCounters
) -> ReleaseCounters | None:
    """The part of `window` after the warm-up (its latency is judged); None: still warming."""
    if state.warm_start is None:
        return None
    warmed = delta(state.warm_start, canary)
    return warmed if warmed.requests < window.requests else window


def _ceilings(
    window: ReleaseCounters, settings: Settings, label: str, warmed: ReleaseCounters | None
) -> list[Evidence]:
    """The ceilings over `window`; the p99's over its `warmed` part (None: not judged yet)."""
    out: list[Evidence] = []
    rate = error_rate(window)
    enough = window.requests >= settings.min_requests
    if settings.error_rate is not None:
        # errors that break the ceiling even if every request still to come succeeds
        # fail at once: waiting for min_requests would only serve more errors
        floor = max(window.requests, settings.min_requests)
        over = window.errors_5xx > settings.error_rate * floor
        verdict = Verdict.FAIL if over else (Verdict.PASS if enough else Verdict.INCONCLUSIVE)
        what = "is over" if over else "is within"
        out.append(
            Evidence(
                check="error_rate ceiling",
                verdict=verdict,
                summary=(
                    f"error rate {window.errors_5xx}/{window.requests} "
                    f"({(rate or 0) * 100:.2f}%) {what} the {settings.error_rate * 100:g}% "
                    f"ceiling ({label})"
                ),
                canary_requests=window.requests,
                canary_events=window.errors_5xx,
                canary_rate=rate,
                statistic=rate,
                threshold=settings.error_rate,
            )
        )
    if warmed is None:
        return out
    if warmed.requests < window.requests:
        label += f", {window.requests - warmed.requests} warm-up requests left out"
        window, enough = warmed, warmed.requests >= settings.min_requests
    p99 = quantile(window, 0.99)
    if settings.p99 is not None:
        over = enough and p99 is not None and p99 > settings.p99
        verdict = Verdict.FAIL if over else (Verdict.PASS if enough else Verdict.INCONCLUSIVE)
        shown = _ms(p99) if p99 is not None else "unknown"
        out.append(
            Evidence(
                check="p99 ceiling",
                verdict=verdict,
                summary=(
                    f"p99 latency {shown} is {'over' if over else 'within'} the "
                    f"{_ms(settings.p99)} ceiling ({label}, {window.requests} requests)"
                ),
                canary_requests=window.requests,
                statistic=p99 if p99 is None or not math.isinf(p99) else None,
                threshold=settings.p99,
            )
        )
    return out


def _e(log_e: float | None) -> float:
    if log_e is None:
        return 0.0
    return math.exp(min(log_e, 700.0))


def _comparisons(state: JudgeState, settings: Settings) -> list[Evidence]:
    known = _baseline_all(state)
    window = (
        delta(state.window_start, state.canary_last)
        if state.window_start and state.canary_last
        else zero()
    )
    if known.requests == 0:
        return [
            Evidence(
                check="compare with baseline",
                verdict=Verdict.PASS,
                summary="no baseline to compare with (no release served before): ceilings only",
            )
        ]
    seen = state.canary_seen.requests
    out = []
    test = state.errors
    # beside the canary in this window (the holdback of a watch window, a canary step's
    # baseline): what the tests compare with; the baseline's recent past otherwise
    shown = state.baseline_window if state.baseline_window.requests else known
    b_rate = shown.errors_5xx / shown.requests
    c_rate = error_rate(window)
    fail = test.rejected
    e_value = _e(test.peak if fail else test.log_e)
    need = needed(errors(known).smoothed(), settings.margin, 1.0, 1 / test.threshold)
    verdict = Verdict.FAIL if fail else (Verdict.PASS if seen >= need else Verdict.INCONCLUSIVE)
    progress = _progress(verdict, seen, need)
    if not fail and known.requests < MIN_HISTORY and not state.baseline_window.requests:
        # too short a history to bound the baseline's rate: without traffic beside the
        # canary (the watch window) no test runs, however many canary requests pass
        verdict = Verdict.INCONCLUSIVE
        progress = f"; {MIN_HISTORY} baseline requests needed to bound its rate"
    out.append(
        Evidence(
            check="errors vs baseline",
            verdict=verdict,
            summary=(
                f"5xx: canary {window.errors_5xx}/{window.requests} "
                f"({(c_rate or 0) * 100:.2f}%) vs baseline {shown.errors_5xx}/{shown.requests} "
                f"({b_rate * 100:.2f}%): evidence {e_value:.3g} {'≥' if fail else '<'} "
                f"{test.threshold:.0f} for a worsening of {settings.margin * 100:g} pp or more"
                + progress
            ),
            canary_requests=window.requests,
            canary_events=window.errors_5xx,
            canary_rate=c_rate,
            baseline_requests=shown.requests,
            baseline_events=shown.errors_5xx,
            baseline_rate=b_rate,
            statistic=e_value,
            threshold=test.threshold,
        )
    )
    out.append(
        _latency_evidence(state, state.latency, state.bound, "p99", P99_RATIO, shown, window)
    )
    if state.bound is not None:
        out.append(
            _latency_evidence(
                state, state.latency_p95, state.bound_p95, "p95", P95_RATIO, shown, window
            )
        )
    return out


def _latency_evidence(
    state: JudgeState,
    test: EProcess,
    bound: float | None,
    quantile_name: str,
    ratio: float,
    known: ReleaseCounters,
    window: ReleaseCounters,
) -> Evidence:
    check = f"{quantile_name} latency vs baseline"
    if bound is None and quantile_name == "p99":
        return Evidence(
            check=check,
            verdict=Verdict.INCONCLUSIVE,
            summary=f"the baseline has {known.requests} requests: "
            f"{MIN_BASELINE} needed to know its p99",
            baseline_requests=known.requests,
        )
    if bound is None:
        # the p99's bound is the lowest one, or the ones below it hold most of the
        # baseline: the p99 test watches the body already
        return Evidence(
            check=check,
            verdict=Verdict.PASS,
            summary=f"no bucket below {_ms(state.bound or 0.0)} stands for the baseline's "
            "p95: the p99 test alone",
        )
    seen = state.canary_seen.requests
    c_slow, b_slow = slow(window, bound), slow(known, bound)
    fail = test.rejected
    e_value = _e(test.peak if fail else test.log_e)
    need = needed(b_slow.smoothed(), 0.0, ratio, 1 / test.threshold)
    verdict = Verdict.FAIL if fail else (Verdict.PASS if seen >= need else Verdict.INCONCLUSIVE)
    return Evidence(
        check=check,
        verdict=verdict,
        summary=(
            f"slower than {_ms(bound)} (the baseline's {quantile_name}): canary "
            f"{c_slow.events}/{c_slow.requests} ({(c_slow.rate() or 0) * 100:.2f}%) vs "
            f"baseline {b_slow.events}/{b_slow.requests} ({(b_slow.rate() or 0) * 100:.2f}%): "
            f"evidence {e_value:.3g} {'≥' if fail else '<'} {test.threshold:.0f}"
            + _progress(verdict, seen, need)
        ),
        canary_requests=c_slow.requests,
        canary_events=c_slow.events,
        canary_rate=c_slow.rate(),
        baseline_requests=b_slow.requests,
        baseline_events=b_slow.events,
        baseline_rate=b_slow.rate(),
        statistic=e_value,
        threshold=test.threshold,
        bound=bound,
    )


def _progress(verdict: str, seen: int, need: int) -> str:
    if verdict == Verdict.INCONCLUSIVE:
        return f"; {seen} of the {need} canary requests needed to rule it out"
    return ""


def judge_window(window: ReleaseCounters, settings: Settings) -> Judgement:
    """One window of the canary's counters alone, judged by the ceilings (no comparison)."""
    looks = [Look(at=0.0, canary=ReleaseCounters()), Look(at=0.0, canary=window)]
    return judge(looks, Settings(**{**settings.__dict__, "compare": False, "warmup": 0.0}))


def replay(looks: Iterable[Look], settings: Settings) -> Iterator[Judgement]:
    """The judgement after each look of a recorded stream."""
    state = JudgeState()
    for look in looks:
        state = observe(state, look, settings)
        yield decide(state, settings, look.at)


def judge(looks: Iterable[Look], settings: Settings) -> Judgement:
    """The judgement of a whole recorded stream: the first fail if any, else the last word."""
    last = Judgement(verdict="inconclusive", requests=0, error_rate=None, p99=None)
    for judgement in replay(looks, settings):
        if judgement.verdict == Verdict.FAIL:
            return judgement
        last = judgement
    return last


__all__ = [
    "JudgeState",
    "Look",
    "Settings",
    "Verdict",
    "decide",
    "judge",
    "judge_window",
    "observe",
    "replay",
    "start_window",
]
