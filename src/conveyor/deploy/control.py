"""A canary step under people's hands: promote, promote to 100%, pause, resume.

Two pure decisions. `ask` turns a person's request into the step's new
`StepControl` (or says why it makes no sense now); `next_action` says what the
engine does with a step's pause given the judge's last word, that control and
the time. The engine and the API only read and write records around them.

A pause holds the step but not the judge: it keeps looking, and a failure still
rolls back (Argo Rollouts' pause holds indefinitely; so does this one, though
never with a failing release in traffic).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from conveyor.protocol import ControlAction, StepControl

INCONCLUSIVE_LIMIT = 3  # step_pause multiples a canary step waits for enough traffic
INCONCLUSIVE_FLOOR = 15.0  # ... and at least this many seconds past the pause


class ControlError(ValueError):
    """A request that makes no sense for the step as it is (the API answers 409)."""


class Next(StrEnum):
    """What the engine does with a watched step on this look."""

    WAIT = "wait"
    END = "end"  # the pause is over and nothing objected: the step succeeded
    PROMOTED = "promoted"  # a person ended the step as passed
    FAIL = "fail"  # the judge failed the release: roll back
    NO_TRAFFIC = "no traffic"  # too little traffic to judge, for too long: roll back


@dataclass(frozen=True)
class StepWatch:
    """A watched step as the engine sees it on one look."""

    pause: float  # seconds the step is watched (step_pause, or the watch window)
    watch_from: float  # unix time the hosts converged and the watch began
    control: StepControl
    analysed: bool  # the judge looks at this step
    monitor: bool  # the watch window after 100% (ends at its time whatever the verdict)
    verdict: str | None  # the judge's last word: pass | fail | inconclusive
    conclusive: bool = False
    early: bool = False  # `advance: early`: a conclusive pass ends the step at once


def no_traffic_after(pause: float) -> float:
    """How long a step waits for enough traffic before it gives up (seconds watched)."""
    return max(pause * INCONCLUSIVE_LIMIT, pause + INCONCLUSIVE_FLOOR)


def watched(watch_from: float | None, control: StepControl, now: float) -> float:
    """Seconds of the step's pause that count: since the watch began, less what was held."""
    if watch_from is None:
        return 0.0
    held = control.held
    if control.paused_at is not None:
        held += max(0.0, now - max(control.paused_at, watch_from))
    return max(0.0, now - watch_from - held)


def left(pause: float, watch_from: float | None, control: StepControl, now: float) -> float:
    """Seconds left in the step's pause (the whole pause before the watch begins)."""
    return max(0.0, pause - watched(watch_from, control, now))


def next_action(s: StepWatch, now: float) -> Next:
    """The step's next move: a promote wins, then the judge's failure, then the clock."""
    if s.control.promoted_by is not None:
        return Next.PROMOTED
    if s.verdict == "fail":
        return Next.FAIL
    elapsed = watched(s.watch_from, s.control, now)
    held = s.control.paused_by is not None
    over = elapsed >= s.pause
    if not s.analysed or s.monitor:
        return Next.END if over and not held else Next.WAIT
    if s.verdict == "pass":
        return Next.END if not held and (over or (s.conclusive and s.early)) else Next.WAIT
    if elapsed >= no_traffic_after(s.pause):
        return Next.NO_TRAFFIC
    return Next.WAIT


def ask(
    control: StepControl,
    action: str,
    by: str,
    now: float,
    watch_from: float | None,
) -> StepControl:
    """The step's control after a person's request, recorded with who and when."""
    if action not in ("promote", "promote-full", "pause", "resume"):
        raise ControlError(f"unknown action {action!r}: promote, promote-full, pause or resume")
    record = ControlAction.model_validate(
        {"action": action, "by": by, "at": datetime.fromtimestamp(now, UTC)}
    )
    actions = [*control.actions, record]
    if control.promoted_by is not None:
        raise ControlError(f"this step was already promoted by {control.promoted_by}")
    if action in ("promote", "promote-full"):
        # a promote ends a pause too: whatever was held counts as held
        return control.model_copy(
            update={
                "promoted_by": by,
                "full": action == "promote-full",
                "held": control.held + _held_now(control, watch_from, now),
                "paused_by": None,
                "paused_at": None,
                "actions": actions,
            }
        )
    if action == "pause":
        if control.paused_by is not None:
            raise ControlError(f"already paused by {control.paused_by}: resume it, or promote")
        return control.model_copy(update={"paused_by": by, "paused_at": now, "actions": actions})
    if action == "resume":
        if control.paused_by is None:
            raise ControlError("this step is not paused: nothing to resume")
        return control.model_copy(
            update={
                "held": control.held + _held_now(control, watch_from, now),
                "paused_by": None,
                "paused_at": None,
                "actions": actions,
            }
        )
    raise AssertionError(action)


def _held_now(control: StepControl, watch_from: float | None, now: float) -> float:
    """The seconds of watch the pause underway has held so far (none before the watch)."""
    if control.paused_at is None or watch_from is None:
        return 0.0
    return max(0.0, now - max(control.paused_at, watch_from))


def said(action: ControlAction) -> str:
    """One line for a step's log and the history: who did what, when."""
    what = {
        "promote": "promoted (the step ends as passed)",
        "promote-full": "promoted to 100% (the canary's later steps are skipped)",
        "pause": "paused (the judge still watches and rolls back on a failure)",
        "resume": "resumed (the step goes on with the time it had left)",
    }[action.action]
    return f"{what} by {action.by}"


def done(action: ControlAction) -> str:
    """A short line for a list of deployments: 'paused by dan at 2026-12-05 21:08:50 UTC'."""
    what = {
        "promote": "promoted",
        "promote-full": "promoted to 100%",
        "pause": "paused",
        "resume": "resumed",
    }[action.action]
    return f"{what} by {action.by} at {action.at:%Y-%m-%d %H:%M:%S} UTC"
