"""Blue-green: the new release starts beside the old on every host with no traffic, is
checked through each router's preview route, then every router switches at once."""

from __future__ import annotations

from conveyor.deploy.plan import Context, PlannedStep


def plan(ctx: Context) -> list[PlannedStep]:
    steps = ctx.migrate_step()
    steps.append(ctx.preview_step())
    steps.append(ctx.switch_step())
    steps.append(ctx.verify_step())
    return steps
