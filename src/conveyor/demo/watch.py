"""Following a run's release up the promotion chain, read from the HTTP API as it happens.

Each change (a deployment starting or ending, a step beginning with the weights it
writes, a check or an analysis verdict in a step's log) is printed once, as a line;
a live status line shows the step underway, the analysis so far and the traffic
the demo's load generator sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from conveyor.cli.watch import traffic_count
from conveyor.client import Client
from conveyor.demo.traffic import Traffic
from conveyor.protocol import DeploymentOut, DeploymentStepOut, Judgement, ReleaseWeight

ENDED = ("succeeded", "failed", "cancelled", "superseded")
ICONS = {"succeeded": "[green]✓[/green]", "failed": "[red]✗[/red]", "skipped": "[dim]–[/dim]"}


@dataclass
class _Seen:
    """What has been printed of one deployment already."""

    state: str = ""
    steps: dict[int, str] = field(default_factory=dict)  # step id -> state printed
    log: dict[int, int] = field(default_factory=dict)  # step id -> characters printed


class ChainWatcher:
    """Prints the deployments of one run, environment after environment, until the chain ends."""

    def __init__(
        self,
        client: Client,
        console: Console,
        app: str,
        environments: list[str],
        *,
        labels: dict[str, str] | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self.client = client
        self.console = console
        self.app = app
        self.environments = environments
        self.labels = labels if labels is not None else {}
        self.traffic = traffic
        self._seen: dict[int, _Seen] = {}

    def follow(
        self, run_id: int, *, timeout: float = 600, interval: float = 0.3
    ) -> dict[str, DeploymentOut]:
        """Until the last environment's deployment ends or one fails; the records by environment."""
        ended: dict[str, DeploymentOut] = {}
        deadline = time.monotonic() + timeout
        with self.console.status("waiting for the first deployment…") as status:
            while time.monotonic() < deadline:
                listed = self.client.deployments(self.app, None, 50)
                ours = sorted((d for d in listed if d.run == run_id), key=lambda d: d.id)
                current = None
                for summary in ours:
                    if summary.environment in ended:
                        continue
                    record = self.client.deployment(summary.id)
                    self._print_changes(record)
                    if record.state in ENDED:
                        ended[record.environment] = record
                    else:
                        current = record
                last = self.environments[-1]
                if last in ended or any(d.state != "succeeded" for d in ended.values()):
                    return ended
                self._update(status, current)
                time.sleep(interval)
        raise RuntimeError(f"run {run_id} had not reached {self.environments[-1]} in {timeout:g}s")

    def release(self, release: str | None) -> str:
        if release is None:
            return "nothing"
        label = self.labels.get(release)
        return f"{release} ({label})" if label else release

    # -- printing --------------------------------------------------------------

    def _print_changes(self, d: DeploymentOut) -> None:
        seen = self._seen.setdefault(d.id, _Seen())
        env = f"[bold]{d.environment}[/bold]"
        if d.state != seen.state:
            seen.state = d.state
            if d.state in ("queued", "waiting"):
                why = f": {escape(d.reason)}" if d.reason else ""
                self.console.print(f"[dim]{d.environment}: deployment {d.state}{why}[/dim]")
            elif d.state == "running":
                self.console.print(
                    f"[bold]▶ {env}: deploying {self.release(d.release)}[/bold] "
                    f"({d.strategy}, replacing {self.release(d.previous_release)}, "
                    f"hosts {', '.join(d.hosts) or '-'})"
                )
        for step in d.steps:
            self._print_step(seen, step)
        if d.state in ENDED:
            took = f" in {d.duration:.1f}s" if d.duration is not None else ""
            if d.state == "succeeded":
                self.console.print(
                    f"[green bold]✓ {d.environment}: {self.release(d.release)} "
                    f"deployed{took}[/green bold]"
                )
            else:
                why = f": {escape(d.reason)}" if d.reason else ""
                self.console.print(f"[red bold]✗ {d.environment}: {d.state}{took}{why}")

    def _print_step(self, seen: _Seen, step: DeploymentStepOut) -> None:
        sid, state = step.id, step.state
        if state == "pending" or seen.steps.get(sid) == state:
            return
        if sid not in seen.steps and state != "skipped":
            self.console.print(f"  ▸ {escape(step.name)}")
            weights = _weights(step.targets)
            if weights and step.kind != "verify":
                self.console.print(f"    [cyan]{escape(weights)}[/cyan]")
        seen.steps[sid] = state
        text = step.log
        new = text[seen.log.get(sid, 0) :]
        seen.log[sid] = len(text)
        for line in new.splitlines():
            self.console.print(f"    [dim]{escape(line)}[/dim]")
        if state in ("running",):
            return
        icon = ICONS.get(state, "·")
        took = f" in {step.duration:.1f}s" if step.duration is not None else ""
        why = f": {escape(step.reason)}" if step.reason else ""
        verdict = _verdict(step.judgement)
        after = f" — {verdict}" if verdict else ""
        self.console.print(f"  {icon} {escape(step.name)} {state}{took}{after}{why}")
        if step.judgement and self.traffic is not None:
            # the share of traffic the new release really got, as the clients saw it
            self.console.print(f"    [dim]{escape(self._traffic_line())}[/dim]")

    def _update(self, status: Status, d: DeploymentOut | None) -> None:
        parts = []
        if d is None:
            parts.append("waiting for the next deployment…")
        else:
            step = next((s for s in d.steps if s.state == "running"), None)
            parts.append(f"{d.environment}: {step.name if step else d.state}")
            wait = step.waiting_for_traffic if step else None
            verdict = _verdict(step.judgement) if step else None
            if wait:
                parts.append(f"waiting for traffic: {traffic_count(wait)}")
            elif verdict:
                parts.append(verdict)
        if self.traffic is not None:
            parts.append(self._traffic_line())
        status.update(escape(" · ".join(parts)))

    def _traffic_line(self) -> str:
        """`load 58 req/s (v1 74%, v2 26%)`: what the load generator saw in its window."""
        assert self.traffic is not None
        rate, shares = self.traffic.recent()
        total = sum(shares.values()) or 1
        split = ", ".join(
            f"{self.labels.get(r, r)} {n * 100 / total:.0f}%" for r, n in sorted(shares.items())
        )
        return f"load {rate:.0f} req/s" + (f" ({split})" if split else "")


def _weights(targets: dict[str, list[ReleaseWeight]]) -> str:
    """`web-1, web-2: a 75% · b 25%`: hosts grouped by the weights a step writes."""
    groups: dict[str, list[str]] = {}
    for host, items in targets.items():
        key = " · ".join(f"{r.release} {r.weight}%" for r in items) or "nothing"
        groups.setdefault(key, []).append(host)
    return "; ".join(f"{', '.join(hosts)}: {key}" for key, hosts in groups.items())


def _verdict(judgement: Judgement | None) -> str | None:
    if not judgement:
        return None
    text = f"analysis {judgement.verdict} on {judgement.requests} requests"
    if judgement.error_rate is not None:
        text += f", {judgement.error_rate * 100:.1f}% errors"
    if judgement.p99 is not None:
        text += f", p99 {judgement.p99 * 1000:.0f} ms"
    return text
