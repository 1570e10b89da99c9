"""Judging a load test against the previous release's record (pure).

The canary judge's sequential tests (analysis/judge.py) with the previous record as
the baseline's history and no baseline serving beside: its one-sample tests, the
ones of a watch window. The load test's samples are its looks, so a regression is
caught as soon as the evidence is there and an identical release passes with at
most the judge's false-alarm budget (1% by default) of being failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from conveyor.analysis.judge import Look, Settings, Verdict, judge
from conveyor.analysis.window import quantile
from conveyor.load.wire import LoadSample
from conveyor.protocol.metrics import ReleaseCounters

# below this share of the rate asked, the generator (or the release) did not keep up: said
KEPT_UP = 0.9


@dataclass(frozen=True)
class Measured:
    """A load test's figures, as recorded for a release."""

    release: str
    rate_asked: float
    rate: float
    counters: ReleaseCounters
    # the engine's own percentiles (seconds); the histogram's bucket bounds without them
    percentiles: tuple[float | None, float | None, float | None] | None = None

    def line(self) -> str:
        c = self.counters
        qs = (0.5, 0.95, 0.99)
        values = self.percentiles or tuple(quantile(c, q) for q in qs)
        p = dict(zip(qs, values, strict=True))
        shown = ", ".join(f"p{round(q * 100)} {_ms(v)}" for q, v in p.items())
        return (
            f"release {self.release}: {c.requests} requests at {self.rate:.1f}/s "
            f"({self.rate_asked:g}/s asked), {c.errors_5xx} failed; {shown}"
        )


@dataclass(frozen=True)
class LoadVerdict:
    verdict: Literal["baseline", "pass", "fail"]
    lines: list[str]  # the evidence, for the step's log
    reason: str | None = None  # why it failed


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return "over 10 s" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


def settings_for(base: Settings | None) -> Settings:
    """The judge's settings for a load test: the environment's analysis (its ceilings,
    margin and false-alarm budget) if it has one, always comparing, nothing left out."""
    return replace(base or Settings(), compare=True, warmup=0.0, min_requests=0)


def judge_load(
    samples: Sequence[LoadSample],
    now: Measured,
    before: Measured | None,
    settings: Settings,
) -> LoadVerdict:
    """The verdict on a load test of `now`, given the previous release's record."""
    lines = [f"this load test: {now.line()}"]
    if now.rate < KEPT_UP * now.rate_asked:
        lines.append(
            f"the rate achieved ({now.rate:.1f}/s) is below {KEPT_UP:.0%} of the "
            f"{now.rate_asked:g}/s asked: the release or the load generator did not keep up"
        )
    if now.counters.requests == 0:
        return LoadVerdict(
            "fail", lines, "the load test sent no request (is the environment reachable?)"
        )
    if before is None:
        lines.append(
            "no previous record of a load test on this environment: this one is recorded "
            "as the baseline, nothing compared"
        )
        verdict = judge(_looks(samples, None), replace(settings, compare=False))
        failed = [e.summary for e in verdict.evidence if e.verdict == Verdict.FAIL]
        if failed:
            return LoadVerdict("fail", lines + failed, "; ".join(failed))
        return LoadVerdict("baseline", lines)
    lines.append(f"compared with the previous record: {before.line()}")
    lines.append("(in the judge's terms: canary = this release, baseline = the previous record)")
    verdict = judge(_looks(samples, before.counters), settings)
    lines += [f"{e.check}: {e.verdict}: {e.summary}" for e in verdict.evidence]
    if verdict.verdict == Verdict.FAIL:
        return LoadVerdict(
            "fail",
            lines,
            f"regression against release {before.release}'s load test: "
            + "; ".join(verdict.reasons),
        )
    return LoadVerdict("pass", lines)


def _looks(samples: Sequence[LoadSample], reference: ReleaseCounters | None) -> list[Look]:
    """The samples as the judge's looks: the release as the canary, no baseline beside
    (its counters stand still), the previous record as the baseline's history."""
    still = ReleaseCounters()
    first = Look(at=0.0, canary=ReleaseCounters(), baseline=still, reference=reference)
    ordered = sorted(samples, key=lambda s: s.at)
    return [first] + [Look(at=s.at, canary=s.counters, baseline=still) for s in ordered]
