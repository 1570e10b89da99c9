"""Sequential tests that stay valid however often they are looked at.

Each test is an *e-process*: a running product of likelihood ratios whose
expectation under the null hypothesis is at most 1 at every moment. By Ville's
inequality the chance that it *ever* reaches 1/α, looking after every batch for
as long as one likes, is at most α. That is what lets the judge decide at any
moment of a canary step, every second, without inflating its false alarms — the
problem that fixed-threshold judges (Flagger, Argo Rollouts) and fixed-sample
tests looked at repeatedly (Kayenta's Mann-Whitney) ignore. The construction
follows Lindon, Sanden and Shirikian, "Rapid Regression Detection in Software
Deployments through Sequential Testing" (KDD 2022): count *events* (5xx answers,
requests slower than a threshold) on both releases while they serve side by side.

**Two-sample step (canary and baseline serving at the same time).** Within a
batch in which the canary answered n_c requests and the baseline n_b, an event
comes from the canary with probability π = n_c·p_c / (n_c·p_c + n_b·p_b). Given
the batch's request counts and its number of events, the canary's share of the
events is binomial in π, and the nuisance (the baseline's own rate, however it
moves with time of day or a shared database's hiccup) drops out. Under the null
"the canary is no worse" (p_c ≤ p_b), π ≤ π0 = n_c / (n_c + n_b), known exactly.
The alternative is a *predictable plug-in*: estimates of p_b and p_c from the
batches before this one, with the canary's rate held at least `margin` (added)
and `ratio` (multiplied) above the baseline's — the practically meaningful
worsening the test is tuned to catch. Because the plug-in only uses the past, the
product stays an e-process for any choice (Wald; Ramdas et al., "Game-theoretic
statistics and safe anytime-valid inference", 2023).

**One-sample step (no baseline traffic: the watch window after 100%).** The
canary's events are Bernoulli in p_c; the null is p_c ≤ p0, with p0 an upper
confidence bound on the baseline's rate from what it served before, and the same
plug-in alternative. Both steps multiply into one e-process, so a deployment's
canary steps and its watch window share one false-alarm budget.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

ALPHA = 0.01  # the false-alarm budget of the judge's comparisons over a whole deployment
ALPHA_HISTORY = 0.0005  # of each test's share, what the baseline's upper bound may be wrong by
FIRST_EPOCH = 0.75  # the weight of the first epoch; later ones share the rest
# with the deployment's epochs planned, the share of the rest spread evenly over them (the
# remainder for epochs beyond the plan, decaying): a release can turn bad in any minute of
# a watch window, and the tenth epoch then costs log(4·13/0.8) nats, not log(4·10·11)
PLANNED_SHARE = 0.8


def epoch_weight(k: int, planned: int = 0) -> float:
    """The mass added at the start of epoch k (0-based); over all k they add up to 1.

    Unplanned: 3/4 for the first, 1/(4·k·(k+1)) for epoch k ≥ 1. With `planned` epochs
    (≥ 2): 3/4 for the first, the rest's PLANNED_SHARE evenly over epochs 1 to planned-1,
    and what is left over the epochs after, decaying as 1/(j·(j+1)).
    """
    rest = 1 - FIRST_EPOCH
    if k == 0:
        return FIRST_EPOCH
    if planned < 2:
        return rest / (k * (k + 1))
    if k < planned:
        return rest * PLANNED_SHARE / (planned - 1)
    j = k - planned + 1
    return rest * (1 - PLANNED_SHARE) / (j * (j + 1))


_CAP = 0.999  # rates are kept below 1: one event must never make a ratio infinite


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


class Tally(BaseModel):
    """Requests and events (errors, or slow requests) of one release."""

    requests: int = 0
    events: int = 0

    def rate(self) -> float | None:
        return self.events / self.requests if self.requests else None

    def smoothed(self) -> float:
        """The rate with Jeffreys' prior: never 0 or 1, so every ratio stays finite."""
        return (self.events + 0.5) / (self.requests + 1)

    def upper(self, alpha: float) -> float:
        """Jeffreys' upper confidence bound on the rate, at level 1 - alpha."""
        # imported here: scipy takes seconds to import, and every server start would pay
        from scipy.special import betaincinv

        failures = self.requests - self.events
        return float(betaincinv(self.events + 0.5, failures + 0.5, 1 - alpha))

    def __add__(self, other: Tally) -> Tally:
        return Tally(requests=self.requests + other.requests, events=self.events + other.events)


class EProcess(BaseModel):
    """The running state of one test: a mixture of e-processes started at each epoch.

    A single product started at the first look would sink while the canary is
    healthy and then take long to climb when it turns bad late in a watch window.
    So mass is added at the start of each epoch (each step, and each minute of a
    long one): the first epoch with weight 3/4, epoch k ≥ 1 with 1/(4·k·(k+1)), or,
    when the deployment's judged minutes are known (`planned` epochs), the rest
    spread evenly over them (`epoch_weight`). The weights add up to at most 1, so the
    mixture is still an e-process and Ville's bound holds for the whole deployment;
    a regression starting in epoch k costs only log(1/weight) more evidence than one
    present from the start.
    """

    alpha: float = ALPHA / 2  # this test's share of the false-alarm budget
    history: float = ALPHA_HISTORY  # ... of which what the baseline's upper bound may be wrong by
    log_e: float | None = None  # log of the mixture; None until the first epoch starts
    peak: float | None = None
    epochs: int = 0
    planned: int = 0  # epochs the deployment plans (0: not known)
    batches: int = 0

    @property
    def threshold(self) -> float:
        """The e-value at which the test rejects: 1 / (its alpha, less the baseline's bound)."""
        return 1 / (self.alpha - self.history)

    @property
    def rejected(self) -> bool:
        # a rejection stands: the guarantee is about ever crossing, not about staying over
        return self.peak is not None and self.peak >= math.log(self.threshold)

    def begin_epoch(self) -> EProcess:
        k = self.epochs
        w = epoch_weight(k, self.planned)
        log_e = math.log(w) if self.log_e is None else _logaddexp(self.log_e, math.log(w))
        peak = log_e if self.peak is None else max(self.peak, log_e)
        return self.model_copy(update={"log_e": log_e, "peak": peak, "epochs": k + 1})

    def _with(self, llr: float) -> EProcess:
        if self.log_e is None:
            return self
        log_e = self.log_e + llr
        peak = log_e if self.peak is None else max(self.peak, log_e)
        return self.model_copy(update={"log_e": log_e, "peak": peak, "batches": self.batches + 1})

    def two_sample(
        self,
        canary: Tally,
        baseline: Tally,
        canary_before: Tally,
        baseline_before: Tally,
        *,
        margin: float,
        ratio: float,
    ) -> EProcess:
        """One batch in which both releases served; `*_before` are all earlier batches."""
        events = canary.events + baseline.events
        if canary.requests == 0 or baseline.requests == 0 or events == 0:
            return self  # no event, or one release alone: nothing to compare
        q_b, q_c = _plug_in(canary_before, baseline_before, margin=margin, ratio=ratio)
        n_c, n_b = canary.requests, baseline.requests
        pi0 = n_c / (n_c + n_b)
        pi1 = n_c * q_c / (n_c * q_c + n_b * q_b)
        if pi1 <= pi0:
            return self
        llr = canary.events * math.log(pi1 / pi0) + baseline.events * math.log(
            (1 - pi1) / (1 - pi0)
        )
        return self._with(llr)

    def one_sample(
        self, canary: Tally, canary_before: Tally, p0: float, *, margin: float, ratio: float
    ) -> EProcess:
        """One batch of the canary alone, against a baseline rate of at most p0."""
        if canary.requests == 0 or p0 >= _CAP:
            return self
        q = _shrunk(canary_before, min(_CAP, p0 * ratio + margin))
        if q <= p0:
            return self
        quiet = canary.requests - canary.events
        llr = canary.events * math.log(q / p0) + quiet * math.log((1 - q) / (1 - p0))
        return self._with(llr)


def _shrunk(canary: Tally, floor: float) -> float:
    """The canary's rate for the alternative: its estimate, but never below `floor`.

    The estimate is shrunk toward the floor by a prior worth two events, so that a
    few early errors (or none) do not swing the alternative far from anything
    plausible — a wrong alternative costs evidence, never validity.
    """
    k = 2 / max(floor, 1e-6)
    estimate = (canary.events + k * floor) / (canary.requests + k)
    return min(_CAP, max(floor, estimate))


def _plug_in(canary: Tally, baseline: Tally, *, margin: float, ratio: float) -> tuple[float, float]:
    """Predictable rates (baseline, canary) for the alternative, from earlier batches only.

    The baseline's is estimated from both releases pooled: early on, when the
    baseline alone has seen few events, a low estimate would make the alternative
    claim a large worsening and lose evidence on every baseline error.
    """
    q_b = (baseline + canary).smoothed()
    return q_b, _shrunk(canary, min(_CAP, q_b * ratio + margin))
