"""The ceiling judge: pass, fail or inconclusive for one release over one window.

A pure function of counters and the `analysis` section, so that the canary
strategy and the post-deploy monitor share it and tests read as tables.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from conveyor.analysis.window import error_rate, quantile
from conveyor.config import Analysis
from conveyor.protocol import ReleaseCounters


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    requests: int
    error_rate: float | None
    p99: float | None
    reasons: list[str] = field(default_factory=list)


def _ms(seconds: float) -> str:
    return "over 10 s" if math.isinf(seconds) else f"{seconds * 1000:g} ms"


def judge(window: ReleaseCounters, analysis: Analysis) -> Judgement:
    """Judge a release's window against the error-rate and p99 ceilings."""
    rate = error_rate(window)
    p99 = quantile(window, 0.99)
    reasons: list[str] = []
    if analysis.error_rate is not None:
        # errors that break the ceiling even if every request still to come succeeds
        # fail at once: waiting for min_requests would only serve more errors
        floor = max(window.requests, analysis.min_requests)
        if window.errors_5xx > analysis.error_rate * floor:
            reasons.append(
                f"error rate {window.errors_5xx}/{window.requests} "
                f"({(rate or 0) * 100:.2f}%) is over the {analysis.error_rate * 100:g}% ceiling"
            )
    if window.requests < analysis.min_requests and not reasons:
        return Judgement(
            Verdict.INCONCLUSIVE,
            window.requests,
            rate,
            p99,
            [f"{window.requests} of the {analysis.min_requests} requests needed to judge"],
        )
    if analysis.p99 is not None and p99 is not None and p99 > analysis.p99:
        reasons.append(f"p99 latency {_ms(p99)} is over the {_ms(analysis.p99)} ceiling")
    verdict = Verdict.FAIL if reasons else Verdict.PASS
    return Judgement(verdict, window.requests, rate, p99, reasons)
