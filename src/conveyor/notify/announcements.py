"""What an environment's `announce:` says: before a deployment moves traffic, and after it.

Pure functions over plain data, like messages.py, with the same labelled lines:

    before: What, Commits, Where, Strategy, Expected, Link, Rollback
    after:  What, Error rate, p95, Measured, Link, Rollback
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from conveyor.config import Notify
from conveyor.notify.messages import Message

KIND = frozenset({"announce"})
MAX_COMMITS = 20  # listed one a line; past this, a count


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str


@dataclass(frozen=True)
class Plan:
    """How the deployment will go, from the environment's settings."""

    strategy: str  # rolling | blue-green | canary
    steps: Sequence[int] = (100,)
    step_pause: float = 0.0
    batch: int = 1  # rolling: hosts at a time
    monitor: float = 0.0  # seconds watched after 100%


@dataclass(frozen=True)
class StartFacts:
    """A deployment about to move traffic."""

    id: int
    app: str
    environment: str
    release: str
    sha: str
    link: str
    hosts: Sequence[str]
    plan: Plan
    previous_release: str | None = None
    # the commits since the previous release; None: the range is not in the repository
    commits: Sequence[Commit] | None = ()
    history: Sequence[float] = ()  # seconds the last successful deployments here took
    keep_warm: float = 0.0


@dataclass(frozen=True)
class Measured:
    """One release's traffic as the judge's source counted it."""

    requests: int
    error_rate: float | None
    p95: float | None  # seconds; inf: past the last latency bucket


@dataclass(frozen=True)
class OutcomeFacts:
    """A deployment that ended, with the metrics of the release before and after it."""

    id: int
    app: str
    environment: str
    release: str
    sha: str
    link: str
    hosts: Sequence[str]
    previous_release: str | None
    source: str  # router | prometheus
    before: Measured | None
    after: Measured | None
    took: float | None = None
    error: str | None = None  # the source could not answer


def announce_recipients(targets: Iterable[Notify]) -> list[str]:
    """The targets that take announcements: those whose `on` lists announce, else every one
    (an environment's `announce:` is the opt-in)."""
    targets = list(targets)
    chosen = [t for t in targets if "announce" in t.on] or targets
    return list(dict.fromkeys(t.url for t in chosen))


def before(f: StartFacts) -> Message:
    title = f"{f.app} {f.environment}: deploying {f.release} now"
    lines = {
        "What": f"deployment {f.id} puts release {f.release} (commit {f.sha[:7]}) on "
        f"{f.environment}, starting now",
        "Commits": commits_text(f.commits, f.previous_release),
        "Where": f"app {f.app}, environment {f.environment}, hosts {', '.join(f.hosts) or 'none'}",
        "Strategy": strategy_text(f.plan, len(f.hosts)),
        "Expected": expected_time(f.history, f.plan),
        "Link": f.link,
        "Rollback": rollback_text(f.app, f.environment, f.previous_release, f.keep_warm, f.id),
    }
    return Message(KIND, title, _body(lines))


def after(f: OutcomeFacts) -> Message:
    title = f"{f.app} {f.environment}: {f.release} deployed, how it looks"
    took = f", took {duration(f.took)}" if f.took is not None else ""
    old = f.previous_release or "no earlier release"
    if f.error is not None:
        rate = p95 = f"not measured: {f.error}"
    else:
        rate = _pair(f.before, f.after, old, f.release, lambda m: percent(m.error_rate))
        p95 = _pair(f.before, f.after, old, f.release, lambda m: latency(m.p95))
    lines = {
        "What": f"deployment {f.id}: release {f.release} (commit {f.sha[:7]}) serves "
        f"{f.environment}{took}",
        "Error rate": rate,
        "p95": p95,
        "Measured": f"by the {f.source} source on {', '.join(f.hosts) or 'no host'}: before is "
        f"what {old} served there, after what {f.release} served since it started",
        "Link": f.link,
        "Rollback": rollback_text(f.app, f.environment, f.previous_release, 0.0, None),
    }
    return Message(KIND, title, _body(lines))


def commits_text(commits: Sequence[Commit] | None, previous: str | None) -> str:
    if previous is None:
        return f"the first release of this environment{_listed(commits)}"
    if commits is None:
        return f"not known (the range since {previous} is not in the repository)"
    if not commits:
        return f"none since {previous} (the same code, deployed again)"
    return f"{len(commits)} since {previous}{_listed(commits)}"


def _listed(commits: Sequence[Commit] | None) -> str:
    if not commits:
        return ""
    shown = [f"\n  {c.sha[:7]} {c.subject} ({c.author})" for c in commits[:MAX_COMMITS]]
    more = len(commits) - MAX_COMMITS
    return ":" + "".join(shown) + (f"\n  … and {more} more" if more > 0 else "")


def strategy_text(plan: Plan, hosts: int) -> str:
    if plan.strategy == "canary":
        steps = " → ".join(f"{s}%" for s in plan.steps)
        text = f"canary: {steps} of the traffic, {duration(plan.step_pause)} a step"
    elif plan.strategy == "blue-green":
        text = "blue-green: the new release starts beside the old, then all traffic switches"
    else:
        text = f"rolling: {min(plan.batch, hosts) or 1} of {hosts} host(s) at a time"
    if plan.monitor:
        text += f"; then watched for {duration(plan.monitor)} (a breach rolls back)"
    return text


def expected_time(history: Sequence[float], plan: Plan) -> str:
    """How long the deployment should take: what the last ones here took, else its pauses."""
    if history:
        low, high = min(history), max(history)
        spread = (
            f"took {duration(low)}"
            if len(history) == 1
            else f"took {duration(low)} to {duration(high)}"
        )
        return (
            f"about {duration(statistics.median(history))} (the last {len(history)} "
            f"deployment(s) here {spread})"
        )
    pauses = [s for s in plan.steps if s < 100] if plan.strategy == "canary" else []
    parts = []
    if pauses:
        parts.append(f"{len(pauses)} canary step(s) of {duration(plan.step_pause)}")
    if plan.monitor:
        parts.append(f"{duration(plan.monitor)} of monitoring")
    floor = len(pauses) * plan.step_pause + plan.monitor
    if floor:
        return (
            f"at least {duration(floor)} ({', then '.join(parts)}), plus the time the hosts "
            "take to start the release"
        )
    return "the time the hosts take to start the release (no earlier deployment here to go by)"


def rollback_text(
    app: str, environment: str, previous: str | None, keep_warm: float, deployment: int | None
) -> str:
    if previous is None:
        stop = f"`conveyor abort --deployment {deployment}` stops it; " if deployment else ""
        return f"{stop}there is no earlier release here to roll back to"
    warm = f" (a router switch while it is kept warm, {duration(keep_warm)})" if keep_warm else ""
    return f"`conveyor rollback {app} {environment}` puts {previous} back{warm}"


def _pair(
    old: Measured | None,
    new: Measured | None,
    old_name: str,
    new_name: str,
    show: Callable[[Measured], str],
) -> str:
    return f"{_side(old, old_name, show)} before → {_side(new, new_name, show)} after"


def _side(m: Measured | None, name: str, show: Callable[[Measured], str]) -> str:
    if m is None or m.requests == 0:
        return f"no requests counted ({name})"
    return f"{show(m)} ({name}, {m.requests:,} requests)"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def latency(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "beyond the slowest latency bucket"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _body(lines: dict[str, str]) -> str:
    return "\n".join(f"{label}: {text}" for label, text in lines.items())
