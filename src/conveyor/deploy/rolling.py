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
                batch_name(i, len(batches), hosts),
                {h: ctx.only_new() for h in hosts},
                weight=100,
                checks=True,
            )
        )
    steps.append(ctx.verify_step())
    return steps


NAME_MAX = 255  # a step's name as the store keeps it (PostgreSQL enforces it)


def batch_name(i: int, of: int, hosts: list[str]) -> str:
    """`batch 2/5: web-3, web-4`; a batch of many hosts names the first and counts them."""
    name = f"batch {i}/{of}: {', '.join(hosts)}"
    shown = list(hosts)
    while len(name) > NAME_MAX and len(shown) > 1:
        shown = shown[: max(1, len(shown) // 2)]
        name = f"batch {i}/{of}: {', '.join(shown)} … ({len(hosts)} hosts)"
    return name[:NAME_MAX]
