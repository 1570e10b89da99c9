"""Rolling: `batch` hosts at a time move to the new release, each healthy and checked first."""

from __future__ import annotations

from conveyor.deploy.plan import Context, PlannedStep, chunks


def plan(ctx: Context) -> list[PlannedStep]:
    steps = ctx.migrate_step()
    batches = chunks(ctx.hosts, ctx.batch_size)
    for i, hosts in enumerate(batches, 1):
        steps.append(
            PlannedStep(
                "batch",
                f"batch {i}/{len(batches)}: {', '.join(hosts)}",
                {h: ctx.only_new() for h in hosts},
                weight=100,
                checks=True,
            )
        )
    steps.append(ctx.verify_step())
    return steps
