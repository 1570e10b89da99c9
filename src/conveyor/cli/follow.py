"""Following a run as it goes: each step's state and its log, streamed."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from conveyor.cli.client import Client

ICONS = {
    "succeeded": "[green]✓[/green]",
    "failed": "[red]✗[/red]",
    "cancelled": "[yellow]⊘[/yellow]",
    "interrupted": "[yellow]↻[/yellow]",
    "skipped": "[dim]–[/dim]",
}
FINAL = ("succeeded", "failed", "superseded", "cancelled")


def step_title(step: dict[str, Any]) -> str:
    label = (
        f"{step['kind']}"
        if step["kind"] in ("checkout", "artifact")
        else (f"{step['kind']}: {step['name']}")
    )
    return label if step["attempt"] == 1 else f"{label} (attempt {step['attempt']})"


def follow_run(client: Client, run_id: int, console: Console, *, interval: float = 0.3) -> str:
    """Print the run's steps and logs until it ends; returns its final state."""
    offsets: dict[int, int] = {}
    announced: set[int] = set()
    closed: set[int] = set()
    last_reason: str | None = None
    while True:
        run = client.get(f"/api/runs/{run_id}")
        if run["state"] == "queued" and run.get("reason") != last_reason:
            last_reason = run.get("reason")
            console.print(
                f"[dim]run {run_id} queued{': ' + last_reason if last_reason else ''}[/dim]"
            )
        for step in run["steps"]:
            sid = step["id"]
            if step["state"] == "pending" or sid in closed:
                continue
            if sid not in announced:
                announced.add(sid)
                if step["state"] != "skipped":
                    console.print(f"[bold]▶ {step_title(step)}[/bold]")
            if step["state"] != "skipped":
                while True:
                    chunk = client.get(
                        f"/api/steps/{sid}/log", params={"offset": offsets.get(sid, 0)}
                    )
                    if chunk["text"]:
                        console.out(chunk["text"], end="", highlight=False)
                    offsets[sid] = chunk["next_offset"]
                    if chunk["next_offset"] == chunk["offset"] or not chunk["text"]:
                        break
            if step["state"] not in ("running", "pending"):
                closed.add(sid)
                console.print(_step_line(step))
        if run["state"] in FINAL:
            _summary(run, console)
            return str(run["state"])
        time.sleep(interval)


def _step_line(step: dict[str, Any]) -> str:
    icon = ICONS.get(step["state"], "·")
    took = f" in {step['duration']:.1f}s" if step.get("duration") is not None else ""
    why = f": {step['reason']}" if step.get("reason") else ""
    return f"{icon} {step_title(step)} {step['state']}{took}{why}"


def _summary(run: dict[str, Any], console: Console) -> None:
    if run["state"] == "succeeded":
        console.print(
            f"[green bold]run {run['id']} succeeded[/green bold]: release "
            f"[bold]{run['release']}[/bold] of {run['app']} at {run['sha'][:7]}"
        )
    else:
        console.print(
            f"[red bold]run {run['id']} {run['state']}[/red bold]"
            + (f": {run['reason']}" if run.get("reason") else "")
        )
