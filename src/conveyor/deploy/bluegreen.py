"""Blue-green: the new release starts beside the old on every host with no traffic, is
checked through each router's preview route, then every router switches at once."""

from __future__ import annotations

from conveyor.deploy.plan import Context, PlannedStep


def plan(ctx: Context) -> list[PlannedStep]:
    steps = ctx.migrate_step()
    steps.append(ctx.preview_step())
    steps.append(
        PlannedStep(
            "switch",
            f"switch {len(ctx.hosts)} router(s) to {ctx.release}",
            {h: ctx.only_new() for h in ctx.hosts},
            weight=100,
        )
    )
    steps.append(ctx.verify_step())
    return steps
