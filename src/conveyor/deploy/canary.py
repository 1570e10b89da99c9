"""Canary: both releases on every host; each step sets the new release's share of traffic,
waits `step_pause` while the analysis judges it, and a failure sends all traffic back."""

from __future__ import annotations

from conveyor.deploy.plan import Context, PlannedStep


def plan(ctx: Context) -> list[PlannedStep]:
    steps = ctx.migrate_step()
    if not any(ctx.serving(h) for h in ctx.hosts):
        # a first deployment: no release serves, so there is nothing to compare with
        steps.append(
            PlannedStep(
                "weight",
                f"100% of traffic to {ctx.release} (first deployment)",
                {h: ctx.only_new() for h in ctx.hosts},
                weight=100,
            )
        )
        steps.append(ctx.verify_step())
        return steps
    steps.append(ctx.preview_step())
    for weight in ctx.steps:
        last = weight >= 100
        steps.append(
            PlannedStep(
                "weight",
                f"{weight}% of traffic to {ctx.release}",
                {h: ctx.split(h, weight) for h in ctx.hosts},
                weight=weight,
                pause=0.0 if last else ctx.step_pause,
                analyse=ctx.analyse and not last,
            )
        )
    steps.append(ctx.verify_step())
    return steps
