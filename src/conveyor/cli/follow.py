"""Following a run as it goes: each step's state and its log, streamed."""

from __future__ import annotations

import time

from rich.console import Console

from conveyor.cli.client import Client
from conveyor.protocol import RunOut, StepOut

ICONS = {
    "succeeded": "[green]✓[/green]",
    "failed": "[red]✗[/red]",
    "cancelled": "[yellow]⊘[/yellow]",
    "interrupted": "[yellow]↻[/yellow]",
    "skipped": "[dim]–[/dim]",
}
FINAL = ("succeeded", "failed", "superseded", "cancelled")


def step_title(step: StepOut) -> str:
    label = step.kind if step.kind in ("checkout", "artifact") else f"{step.kind}: {step.name}"
    return label if step.attempt == 1 else f"{label} (attempt {step.attempt})"


def follow_run(client: Client, run_id: int, console: Console, *, interval: float = 0.3) -> str:
    """Print the run's steps and logs until it ends; returns its final state."""
    offsets: dict[int, int] = {}
    announced: set[int] = set()
    closed: set[int] = set()
    last_reason: str | None = None
    while True:
        run = client.run(run_id)
        if run.state == "queued" and run.reason != last_reason:
            last_reason = run.reason
            console.print(
                f"[dim]run {run_id} queued{': ' + last_reason if last_reason else ''}[/dim]"
            )
        for step in run.steps:
            if step.state == "pending" or step.id in closed:
                continue
            if step.id not in announced:
                announced.add(step.id)
                if step.state != "skipped":
                    console.print(f"[bold]▶ {step_title(step)}[/bold]")
            if step.state != "skipped":
                while True:
                    chunk = client.step_log(step.id, offsets.get(step.id, 0))
                    if chunk.text:
                        console.out(chunk.text, end="", highlight=False)
                    offsets[step.id] = chunk.next_offset
                    if chunk.next_offset == chunk.offset or not chunk.text:
                        break
            if step.state not in ("running", "pending"):
                closed.add(step.id)
                console.print(_step_line(step))
        if run.state in FINAL:
            _summary(run, console)
            return run.state
        time.sleep(interval)


def _step_line(step: StepOut) -> str:
    icon = ICONS.get(step.state, "·")
    took = f" in {step.duration:.1f}s" if step.duration is not None else ""
    why = f": {step.reason}" if step.reason else ""
    return f"{icon} {step_title(step)} {step.state}{took}{why}"


def _summary(run: RunOut, console: Console) -> None:
    if run.state == "succeeded":
        console.print(
            f"[green bold]run {run.id} succeeded[/green bold]: release "
            f"[bold]{run.release}[/bold] of {run.app} at {run.sha[:7]}"
        )
    else:
        console.print(
            f"[red bold]run {run.id} {run.state}[/red bold]"
            + (f": {run.reason}" if run.reason else "")
        )
