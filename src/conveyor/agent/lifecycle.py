"""A release's lifecycle on one host: its phases and the pure decisions that move it.

    installing → starting → healthy → draining → warm → stopped
         ↘          ↘                                    ↗
                 failed ────────────────────────────────

A desired release is installed, started and health-checked (`healthy`); one no longer
desired (and no longer serving) drains until its requests in flight are done or its
drain time is up, stays `warm` for `keep_warm` if it is among the last releases kept
warm (warmth.py), then stops. A desired release that is draining or warm comes back
(`revive`). These functions decide; the reconciler (loop.py) does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

__all__ = [
    "Move",
    "Phase",
    "Retire",
    "Retiring",
    "Wanted",
    "retire",
    "want",
]


class Phase(StrEnum):
    """The phase of a release on a host; the values are what the agent reports."""

    INSTALLING = "installing"
    STARTING = "starting"
    HEALTHY = "healthy"
    FAILED = "failed"
    DRAINING = "draining"
    WARM = "warm"
    STOPPED = "stopped"


BRINGING_UP = frozenset({Phase.INSTALLING, Phase.STARTING})


# -- a release no longer desired --------------------------------------------------


class Retire(Enum):
    """What to do with a release that is no longer desired (nor serving)."""

    WAIT = "wait"  # leave it as it is this tick: it drains, or stays warm
    DRAIN = "drain"  # it takes no new traffic: note when its drain started
    KEEP_WARM = "keep warm"  # drained: note until when it stays warm
    STOP = "stop"  # stop its instance, if any, and forget it


@dataclass(frozen=True)
class Retiring:
    """What the agent knows of a release that is no longer desired nor serving."""

    phase: Phase
    verified: bool  # passed a health check since it started
    has_instance: bool
    alive: bool  # its instance runs
    in_flight: int  # requests the router still has in flight to it
    drain: float  # seconds it may drain
    drain_started: float | None
    kept_warm: bool  # among the releases that stay warm (warmth.stay_warm)
    keep_warm: float  # seconds a release kept warm stays warm
    warm_until: float | None


@dataclass(frozen=True)
class Move:
    phase: Phase
    action: Retire
    at: float | None = None  # DRAIN: when the drain started; KEEP_WARM: warm until


def retire(r: Retiring, now: float) -> Move:
    """One step of a retired release toward stopped; repeat until WAIT or STOP."""
    if r.phase in BRINGING_UP and not r.verified:
        return Move(Phase.STOPPED, Retire.STOP)  # never healthy: nothing worth keeping warm
    if r.phase is Phase.HEALTHY and r.has_instance:
        return Move(Phase.DRAINING, Retire.DRAIN, at=now)
    if r.phase is Phase.DRAINING:
        if r.in_flight == 0 or now - (r.drain_started or now) >= r.drain:
            # one retired before the last keep_warm_releases stops at once
            keep = r.keep_warm if r.kept_warm else 0.0
            return Move(Phase.WARM, Retire.KEEP_WARM, at=now + keep)
        return Move(Phase.DRAINING, Retire.WAIT)
    if r.phase is Phase.WARM and r.kept_warm and now < (r.warm_until or now) and r.alive:
        return Move(Phase.WARM, Retire.WAIT)
    # warm and done, failed, stopped, or bringing up a release that was healthy once
    return Move(r.phase, Retire.STOP)


# -- a desired release -------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """What the agent knows of a release that is desired."""

    phase: Phase
    verified: bool
    has_instance: bool
    alive: bool
    migration_due: bool  # its desired migration has not (successfully) run
    failed_now: bool  # it failed for the current desired generation


def want(w: Wanted) -> Phase:
    """The phase a desired release is in now; bringing-up phases (re)start its bring-up."""
    phase = w.phase
    if phase is Phase.FAILED:
        if w.failed_now:
            return phase  # don't retry in a loop; a new desired generation retries
        phase = Phase.INSTALLING
    if phase in (Phase.DRAINING, Phase.WARM):
        # back from draining or warm: only an instance that passed its health check
        # may take traffic again without a new one
        if not w.alive:
            return Phase.INSTALLING
        phase = Phase.HEALTHY if w.verified else Phase.STARTING
    if phase is Phase.HEALTHY and not w.alive and not w.has_instance:
        return Phase.INSTALLING
    if phase is Phase.HEALTHY and w.migration_due:
        return Phase.STARTING  # healthy again once its migration ran and it passes a check
    return phase
