"""Guarded rollouts of a flag, decided: what the next move is, given the judge's word.

A guarded rollout raises a flag's percentage step by step (`--steps 5,25,50,100`); each
step lasts at least its pause. The routers count the requests of the users it is on for
and of those it is off for (router.metrics, per answer: `name=on`, `name=off`, or a
variant), and the canary deployments' sequential judge compares on (as the canary)
against off (as the baseline), its tests carried from step to step. Pure functions here;
deploy/flagrollouts.py reads the counters and writes the records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from conveyor.analysis.judge import Settings
from conveyor.analysis.window import combine
from conveyor.config import Analysis
from conveyor.protocol import Judgement, ReleaseCounters, RouterMetrics
from conveyor.protocol.metrics import AppMetrics

OFF = "off"
DEFAULT_GIVE_UP = 3600.0  # conveyor.yml flags.give_up


class Act(StrEnum):
    WAIT = "wait"  # the pause is not over, or the judge has not seen enough yet
    ADVANCE = "advance"  # to the next step's percentage
    COMPLETE = "complete"  # the last step is reached (100%) or judged (below 100%)
    STOP = "stop"  # a regression: the flag goes off everywhere
    GIVE_UP = "give_up"  # too few requests with the flag on to judge: off everywhere


@dataclass(frozen=True)
class Move:
    act: Act
    why: str = ""


@dataclass(frozen=True)
class StepLook:
    """A running rollout at one moment, with the judge's last word."""

    steps: list[int]
    step: int  # index into steps
    started: float  # unix time the step began
    pause: float  # seconds
    now: float
    judgement: Judgement
    give_up: float = DEFAULT_GIVE_UP  # seconds after the pause a step may wait for the judge's pass
    min_requests: int = 0  # what the judge needs with the flag on (for the give-up's why)


def next_move(look: StepLook) -> Move:
    """Stop on a failed verdict; advance after the pause once the judge passed the step;
    complete at 100% (nobody is left to compare with) or after the last step's pause;
    give up once a step waited `give_up` past its pause without the judge's pass."""
    steps, j = look.steps, look.judgement
    if j.verdict == "fail":
        return Move(Act.STOP, "; ".join(j.reasons) or "the judge saw a regression")
    last = look.step >= len(steps) - 1
    if last and steps[look.step] >= 100:
        return Move(Act.COMPLETE, "on for everyone")
    waited = look.now - look.started
    if waited < look.pause:
        return Move(Act.WAIT)
    if j.verdict != "pass":
        if waited < look.pause + look.give_up:
            return Move(Act.WAIT)
        return Move(Act.GIVE_UP, _gave_up(look))
    if last:
        return Move(Act.COMPLETE, f"the last step, {steps[look.step]}%, passed")
    return Move(Act.ADVANCE, f"step {look.step + 1} of {len(steps)} passed")


def _gave_up(look: StepLook) -> str:
    j = look.judgement
    needs = f", it needs {look.min_requests}" if look.min_requests else ""
    return (
        f"gave up at {look.steps[look.step]}%: in {_duration(look.now - look.started)} the "
        f"judge saw {j.requests} requests with the flag on{needs} (analysis.min_requests) "
        f"and could not pass the step (flags.give_up: {_duration(look.give_up)} after the "
        "step's pause); raise the traffic the flag is on for (a larger first step) or "
        "flags.give_up, then start the rollout again"
    )


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


def answer_keys(name: str, variants: list[str]) -> tuple[list[str], str]:
    """The router's keys of a flag's answers: those it is on for, and the one it is off."""
    on = [f"{name}={v}" for v in variants] if variants else [f"{name}=on"]
    return on, f"{name}={OFF}"


def on_and_off(
    counters: Mapping[str, ReleaseCounters], on: list[str], off: str
) -> tuple[ReleaseCounters, ReleaseCounters]:
    """The judge's canary (the users the flag is on for) and baseline (off)."""
    return (
        combine(counters.get(k, ReleaseCounters()) for k in on),
        counters.get(off, ReleaseCounters()),
    )


def flags_view(metrics: RouterMetrics | None) -> RouterMetrics | None:
    """A router's report with its flags' answers in place of its releases, for a
    RouterSource (which keeps running totals across router restarts) to read."""
    if metrics is None:
        return None
    return RouterMetrics(
        backend=metrics.backend,
        started_at=metrics.started_at,
        apps={name: AppMetrics(app=name, releases=app.flags) for name, app in metrics.apps.items()},
    )


def settings(analysis: Analysis | None) -> Settings:
    """The environment's analysis, always comparing on against off; no warm-up (both
    sides are served by the same running instances)."""
    if analysis is None:
        return Settings(compare=True)
    base = Settings.of(analysis)
    return Settings(
        error_rate=base.error_rate,
        p99=base.p99,
        compare=True,
        margin=base.margin,
        min_requests=base.min_requests,
        false_alarms=base.false_alarms,
        warmup=0.0,
    )


def evidence_text(j: Judgement) -> str:
    """The judge's word as a history note: verdict, figures and each check's summary."""
    rate = "n/a" if j.error_rate is None else f"{j.error_rate * 100:.2f}%"
    head = f"judge: {j.verdict} after {j.requests} requests with the flag on (5xx {rate})"
    lines = [head, *(f"- {e.check}: {e.verdict}: {e.summary}" for e in j.evidence)]
    return "\n".join(lines)
