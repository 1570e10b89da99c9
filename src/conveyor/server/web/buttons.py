"""The Environment page's buttons, named by what they do: pure functions of the records.

A button says where it leads ("Roll back to 9977d15-1 (served before 1234abc-2)"),
and one that would make no sense is shown disabled with the reason beside it,
rather than left out or, worse, left meaning something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.protocol import DeploymentOut, DeploymentStepOut


@dataclass(frozen=True)
class Action:
    """A button: what it is called, what will happen (its confirmation), what it posts."""

    name: str  # the form action's last path segment (approve, abort, rollback, pause, …)
    label: str
    confirm: str
    fields: dict[str, str] = field(default_factory=dict)
    danger: bool = False
    disabled: str | None = None  # why it is disabled (shown beside it), None if enabled
    help: str = ""  # one line under the buttons: what it does, unlike its neighbours


@dataclass(frozen=True)
class RollbackFacts:
    """What the rollback button is named from: the API's target and what surrounds it."""

    environment: str
    serving: str | None  # the release the environment's record says serves it
    target: str | None  # what `conveyor rollback` would pick; None: nothing (why in `none`)
    none: str | None  # why there is no target
    target_newer: bool  # the target was built after the release serving: a roll forward
    failed_release: str | None  # the release of the last deployment, if it failed
    failed_id: int | None
    acting: DeploymentOut | None  # the deployment underway, if any
    hosts: str


def rollback_button(f: RollbackFacts) -> Action:
    """The red button: back to the release served before, or why there is none."""
    if f.acting is not None and f.target is not None:
        a = f.acting
        return Action(
            "rollback",
            f"Roll back to {f.target} (serving before #{a.id})",
            f"Stop deployment #{a.id} and switch every host of {f.environment} ({f.hosts}) "
            f"back to {f.target} at once?",
            {"to": f.target},
            danger=True,
            help=f"Roll back: a new deployment switching every host to {f.target} at once.",
        )
    if f.target is None:
        return _no_rollback(f.none or "there is no earlier release to go back to")
    if f.target == f.serving:
        return _no_rollback(f"{f.target} serves {f.environment} already")
    if f.target_newer and f.target == f.failed_release:
        return _no_rollback(
            f"the release served before {f.serving} is {f.target}, which just failed here "
            f"(deployment #{f.failed_id}): nothing older to go back to"
        )
    if f.target_newer:
        # after a manual rollback, "the release served before" is the newer one
        return Action(
            "rollback",
            f"Deploy {f.target} again",
            f"Switch every host of {f.environment} ({f.hosts}) from {f.serving} forward to "
            f"{f.target}, the newer release it served before the rollback, at once?",
            {"to": f.target},
            help=f"Deploy again: {f.target} is newer than {f.serving}; it served before "
            "the rollback and goes back on every host at once, with no canary.",
        )
    return Action(
        "rollback",
        f"Roll back to {f.target} (served before {f.serving})",
        f"Roll {f.environment} back from {f.serving} to {f.target} on {f.hosts}, every host "
        "at once?",
        {"to": f.target},
        danger=True,
        help=f"Roll back: every host to {f.target}, the release served before, at once.",
    )


def _no_rollback(why: str) -> Action:
    return Action("rollback", "Roll back", "", disabled=f"No rollback: {why}.", danger=True)


def canary_step(d: DeploymentOut) -> DeploymentStepOut | None:
    """The step underway (or next) when it is a canary traffic step with a pause."""
    step = next((s for s in d.steps if s.state == "running"), None) or next(
        (s for s in d.steps if s.state == "pending"), None
    )
    if step is None or step.kind != "weight" or not step.pause:
        return None
    return step


def canary_buttons(d: DeploymentOut) -> list[Action]:
    """Promote this step, promote to 100%, pause or resume: a running canary's controls."""
    if d.strategy != "canary" or d.state != "running" or d.kind != "deploy":
        return []
    step = canary_step(d)
    ids = {"deployment": str(d.id)}
    if step is None:
        current = next((s for s in d.steps if s.state in ("running", "pending")), None)
        what = f"{current.kind} step ({current.name})" if current else "no step"
        why = f"the deployment is at its {what}, not a canary traffic step"
        return [
            Action("step-promote", "Promote step", "", ids, disabled=why),
            Action("step-pause", "Pause", "", ids, disabled=why),
        ]
    nxt = next(
        (
            s
            for s in d.steps
            if s.position > step.position and s.kind == "weight" and s.state == "pending"
        ),
        None,
    )
    then = f"{nxt.weight}% of traffic next" if nxt is not None else "verify next"
    promote = Action(
        "step-promote",
        f"Promote now: {then}",
        f"End the step '{step.name}' now as passed ({then})?",
        ids,
        help="Promote: ends this step's wait now, as passed.",
    )
    found = [promote]
    if nxt is not None and (nxt.weight or 0) < 100:
        found.append(
            Action(
                "step-promote-full",
                "Promote to 100%",
                f"Skip the canary's later steps and send 100% of traffic to {d.release} now "
                "(then verify and the watch window as usual)?",
                ids,
            )
        )
    control = step.control
    if control is not None and control.paused_by is not None:
        found.append(
            Action(
                "step-resume",
                "Resume",
                f"Let the step '{step.name}' go on with the time it had left?",
                ids,
                help=f"Paused by {control.paused_by}: the step waits; the judge still watches "
                "and rolls back on a failure.",
            )
        )
    else:
        found.append(
            Action(
                "step-pause",
                "Pause",
                f"Hold the step '{step.name}' until someone resumes or promotes it? The judge "
                "still watches and rolls back on a failure.",
                ids,
                help="Pause: holds this step (the judge still rolls back on a failure).",
            )
        )
    return found


def time_left(d: DeploymentOut) -> str | None:
    """'12 s left in 25% of traffic to X' for the step underway that waits; None otherwise."""
    step = next((s for s in d.steps if s.state == "running"), None)
    if step is None or step.left is None:
        return None
    control = step.control
    if control is not None and control.paused_by is not None:
        return f"paused by {control.paused_by}: {step.left:.0f} s left in {step.name} on resume"
    return f"{step.left:.0f} s left in {step.name}"
