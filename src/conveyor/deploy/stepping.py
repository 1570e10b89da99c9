"""A deployment step's next move: a pure reading of its record, its hosts, the judge, the clock.

The engine (deploy/watching.py) reads the records and the hosts' reports, asks
`next_move` what to do, and writes what it says: wait, fail (and roll back), run
the step's checks, watch its pause, end it, or record how a rollback ended. The
pause itself is `pause_move` (before a judge's look) and `judged_move` (after
one), both over deploy/control.py's `next_action`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from conveyor.config import Analysis
from conveyor.deploy.control import Next, StepWatch, next_action, no_traffic_after, watched
from conveyor.deploy.detail import StepDetail
from conveyor.deploy.progress import HostView, Progress
from conveyor.protocol import StepControl

OFFLINE_AFTER = 15.0  # seconds without a word from an agent (as /api/hosts says)
# how long a host may stay unreachable, counted from when this server process first saw
# it so, before a deployment gives up on it (a restarted server gives agents time to return)
OFFLINE_GRACE = float(os.environ.get("CONVEYOR_OFFLINE_GRACE", "20"))
CONVERGE_MARGIN = 120.0  # on top of the health timeout: download, unpack, install hook
ROLLBACK_WAIT = 120.0  # how long a rollback waits for hosts before recording what it reached
FAILURE_CONFIRM = 1.0  # a failure must still be reported this much later (not a stale report)
LOOK_EVERY = 1.0  # seconds between two looks of the judge at a step's counters


class Act(StrEnum):
    WAIT = "wait"
    FAIL = "fail"  # stop here and roll back, for `reason`
    CHECK = "check"  # the hosts converged: run the step's HTTP checks
    WATCH = "watch"  # the hosts converged (and passed their checks): watch the pause
    END = "end"  # the step succeeded
    ROLLED_BACK = "rolled back"  # a rollback step reached what it could: record it


@dataclass(frozen=True)
class Move:
    act: Act
    reason: str | None = None
    # a rollback step's outcome: hosts that did not confirm, that failed, and notes
    pending: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


WAIT = Move(Act.WAIT)

HostState = tuple[Progress, "str | None"]


@dataclass(frozen=True)
class StepLook:
    """A step that wrote desired state, as one look at the records sees it."""

    name: str
    rollback: bool
    hosts: Mapping[str, HostState]  # each host's progress, offline ones within the grace waiting
    views: Mapping[str, HostView]
    app: str
    elapsed: float  # seconds since the step started
    converge_limit: float  # seconds the hosts have to converge
    confirmed: frozenset[str] = frozenset()  # hosts whose failure stayed FAILURE_CONFIRM
    checks: bool = False
    checked: bool = False
    pause: float = 0.0


def next_move(s: StepLook) -> Move:
    """What the engine does with the step on this look."""
    if s.rollback:
        return rollback_move(s.hosts, s.elapsed)
    for name, (progress, message) in s.hosts.items():
        if progress == Progress.FAILED and name in s.confirmed:
            return Move(Act.FAIL, message or f"failed on {name}")
        if progress == Progress.OFFLINE:
            return Move(
                Act.FAIL,
                f"host {name} lost its connection to the server during {s.name!r} "
                f"(unreachable for {OFFLINE_GRACE:g} s)",
            )
    waiting = [n for n, (p, _) in s.hosts.items() if p != Progress.CONVERGED]
    if waiting:
        if s.elapsed <= s.converge_limit:
            return WAIT
        errors = host_errors(s.views, waiting, s.app)
        return Move(
            Act.FAIL,
            f"host(s) {', '.join(waiting)} did not reach {s.name!r} within "
            f"{s.converge_limit:g} s" + (f": {errors}" if errors else ""),
        )
    if s.checks and not s.checked:
        return Move(Act.CHECK)
    if s.pause > 0:
        return Move(Act.WATCH)
    return Move(Act.END)


def rollback_move(hosts: Mapping[str, HostState], elapsed: float) -> Move:
    """A rollback step waits for its hosts (up to ROLLBACK_WAIT), then records what it reached."""
    pending = [n for n, (p, _) in hosts.items() if p == Progress.WAITING]
    if pending and elapsed < ROLLBACK_WAIT:
        return WAIT
    offline = [n for n, (p, _) in hosts.items() if p == Progress.OFFLINE]
    failed = [f"{n}: {m}" for n, (p, m) in hosts.items() if p == Progress.FAILED]
    notes = []
    if offline:
        notes.append(
            f"{', '.join(offline)} not connected: the previous release is written as their "
            "desired state and they return to it when they reconnect"
        )
    if pending:
        notes.append(f"{', '.join(pending)} had not confirmed after {ROLLBACK_WAIT:g} s")
    if failed:
        notes.append("; ".join(failed))
    return Move(Act.ROLLED_BACK, pending=tuple(pending), failed=tuple(failed), notes=tuple(notes))


def host_errors(views: Mapping[str, HostView], names: list[str], app: str) -> str:
    """What the hosts that did not converge report as wrong with the app, if anything."""
    errors = []
    for name in names:
        found = views[name].app(app)
        if found is None:
            continue
        if found.error:
            errors.append(f"{name}: {found.error}")
        errors += [f"{name}: {r.release} {r.error}" for r in found.releases if r.error]
    return "; ".join(errors)


class Pause(StrEnum):
    START = "start"  # the hosts just converged: record when the watch began
    PROMOTED = "promoted"  # a person ended the step as passed
    LOOK = "look"  # time for the judge to look at the counters
    WAIT = "wait"
    END = "end"


@dataclass(frozen=True)
class PauseLook:
    """A watched step between two looks: its watch (None before it began), the judge's last."""

    watch: StepWatch | None
    last_at: float | None = None  # unix time of the judge's last word
    judged: bool = field(default=False)  # the environment has an analysis to judge with


def pause_move(s: PauseLook, now: float) -> Pause:
    """Before a look: start the watch, honour a promote, let the judge look, or the clock."""
    if s.watch is None:
        return Pause.START
    if s.watch.control.promoted_by is not None:
        return Pause.PROMOTED
    if not s.judged or not s.watch.analysed or now - (s.last_at or 0.0) < LOOK_EVERY:
        # between looks: the last word stands (sources change with agents' reports)
        return Pause.END if next_action(s.watch, now) == Next.END else Pause.WAIT
    return Pause.LOOK


def step_watch(
    detail: StepDetail, pause: float, monitor: bool, analysis: Analysis | None
) -> StepWatch | None:
    """The watch of a step's pause as its record stands (None before the hosts converged)."""
    if detail.watch_from is None:
        return None
    last = detail.judgement
    return StepWatch(
        pause=pause,
        watch_from=detail.watch_from,
        control=detail.control or StepControl(),
        analysed=detail.options.analyse and analysis is not None,
        monitor=monitor,
        verdict=last.verdict if last else None,
        conclusive=bool(last and last.conclusive),
        early=analysis is not None and analysis.advance == "early",
    )


def judged_move(
    watch: StepWatch,
    verdict: str,
    conclusive: bool,
    reasons: list[str],
    requests: int,
    min_requests: int,
    now: float,
) -> Move:
    """After the judge's look: end, wait, or fail for its verdict or for want of traffic."""
    action = next_action(replace(watch, verdict=verdict, conclusive=conclusive), now)
    if action == Next.FAIL:
        what = "monitor" if watch.monitor else "analysis"
        return Move(Act.FAIL, f"{what} failed: " + "; ".join(reasons))
    if action == Next.NO_TRAFFIC:
        # counters arrive with agents' reports (every 2 s, later on a busy host): never
        # give up on traffic before several reports had their chance
        return Move(
            Act.FAIL,
            f"not enough traffic to judge the release: {requests} of the "
            f"{min_requests} requests needed in {no_traffic_after(watch.pause):g} s",
        )
    return Move(Act.END) if action == Next.END else WAIT


def source_gives_up(watch: StepWatch, now: float) -> bool:
    """Metrics unavailable: whether the step has waited as long as it waits for traffic."""
    return watched(watch.watch_from, watch.control, now) >= no_traffic_after(watch.pause)


def traffic_until(watch: StepWatch) -> float:
    """When a step waiting for traffic gives up, as the clock stands now (unix time)."""
    return watch.watch_from + watch.control.held + no_traffic_after(watch.pause)
