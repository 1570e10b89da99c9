"""Watching things change: a deployment until it ends, and `status --follow` until Ctrl-C.

A deployment prints one line per event (state, step started or ended, host done,
log line), so a log file or CI job reads like a terminal; on a terminal a live
panel below the lines shows the step underway, its hosts and the judge's word.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.padding import Padding
from rich.spinner import Spinner
from rich.table import Table

from conveyor.cli.client import Client
from conveyor.cli.render import (
    ICONS,
    agent_state,
    deployment_title,
    evidence_lines,
    judgement_text,
    state,
    status_view,
    step_label,
    took,
)
from conveyor.client import wire
from conveyor.protocol import (
    AppStatus,
    DeploymentOut,
    DeploymentStepOut,
    Placement,
    ReleaseWeight,
    TrafficWait,
)

ENDED = ("succeeded", "failed", "cancelled", "superseded")
PENDING = ("queued", "waiting")
WAIT_EVERY = 5.0  # seconds between two lines of a step's traffic count
JUDGE_EVERY = 10.0  # seconds between two lines of the judge's unchanged word on a step


def traffic_count(wait: TrafficWait, now: datetime | None = None) -> str:
    """`12 of 100 requests, 18 s left`: how far a step waiting for traffic is."""
    left = _seconds_until(wait.until, now)
    return f"{wait.requests} of {wait.needed} requests, {left:.0f} s left"


def traffic_hint(wait: TrafficWait) -> str:
    """What to do while a step waits for traffic: where to send it."""
    urls = ", ".join(wait.urls) or "the environment's hosts"
    return f"the new release is judged on its own requests: send traffic to {urls}"


def _seconds_until(until: datetime, now: datetime | None = None) -> float:
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return max(0.0, (until - (now or datetime.now(UTC))).total_seconds())


def follow_deployment(
    client: Client, deployment_id: int, console: Console, *, interval: float = 0.5
) -> DeploymentOut:
    """Print a deployment's progress until it ends; returns its final record."""
    follower = DeploymentFollower(client, console)
    live = (
        Live(console=console, transient=True, refresh_per_second=8) if console.is_terminal else None
    )
    with live if live is not None else contextlib.nullcontext():
        while True:
            d = client.deployment(deployment_id)
            places = follower.placements(d)
            follower.events(d, places)
            if d.state in ENDED:
                break
            if live is not None:
                live.update(panel(d, places))
            time.sleep(interval)
    summary(d, console)
    return d


class DeploymentFollower:
    """What was already printed of one deployment, so each event is printed once."""

    def __init__(self, client: Client, console: Console) -> None:
        self.client = client
        self.console = console
        self.seen_state: tuple[str, str | None] | None = None
        self.announced: set[int] = set()
        self.closed: set[int] = set()
        self.offsets: dict[int, int] = {}
        self.hosts_done: dict[int, set[str]] = {}
        self.waits: dict[int, tuple[float, int]] = {}  # step id -> (when, count) last printed
        self.judged: dict[int, tuple[float, str, float | None]] = {}  # -> (when, verdicts, look)

    def placements(self, d: DeploymentOut) -> dict[str, Placement]:
        """Each host of the environment as its agent reports it, while a step acts on hosts."""
        if not any(s.state == "running" and s.hosts for s in d.steps):
            return {}
        envs = self.client.environments(d.app)
        env = next((e for e in envs if e.name == d.environment), None)
        return {p.host: p for p in env.hosts} if env else {}

    def events(self, d: DeploymentOut, places: dict[str, Placement]) -> None:
        def print_(text: str) -> None:  # one line per event, however long: logs stay greppable
            self.console.print(text, soft_wrap=True)

        now = (d.state, d.reason)
        if now != self.seen_state and d.state not in ENDED:
            self.seen_state = now
            reason = d.reason or ""
            if d.state in PENDING:
                text = reason if reason.startswith(d.state) else f"{d.state}: {reason}"
                print_(f"[yellow]⏸ {escape(text.rstrip(': '))}[/yellow]")
            elif d.state == "running":
                hosts = ", ".join(d.hosts) or "no hosts"
                before = d.previous_release
                print_(
                    f"started on {hosts}"
                    + (f" (serving {before} before)" if before else " (first deployment)")
                )
            elif d.state == "aborting":
                # a rollback's own step says where it goes; an abort says who asked
                print_(f"[magenta]↩ aborting: {escape(reason)}[/magenta]")
        total = len([s for s in d.steps if s.kind != "rollback"])
        for step in d.steps:
            if step.state in ("pending", "skipped") or step.id in self.closed:
                continue
            if step.id not in self.announced:
                self.announced.add(step.id)
                mark = "↩" if step.kind == "rollback" else "▶"
                label = step.name if step.kind == "rollback" else step_label(step, total)
                print_(f"[bold]{mark} {escape(label)}[/bold]")
            self._log(step)
            self._hosts(step, places)
            self._waiting(step)
            self._judgement(step)
            if step.state != "running":
                self.closed.add(step.id)
                print_(step_line(step))

    def _log(self, step: DeploymentStepOut) -> None:
        log = step.log
        offset = self.offsets.get(step.id, 0)
        if offset > len(log):  # the server keeps only the tail of a long log
            offset = 0
        end = log.rfind("\n") + 1  # whole lines only: the rest comes with the next look
        for line in log[offset:end].splitlines():
            self.console.print(f"    [dim]{escape(line)}[/dim]", soft_wrap=True)
        self.offsets[step.id] = max(offset, end)

    def _judgement(self, step: DeploymentStepOut) -> None:
        """The judge's word on the step underway as the API shows it: when a verdict
        changes (its own or a check's), and every JUDGE_EVERY seconds while it holds."""
        j = step.judgement
        if not j or step.state != "running" or step.waiting_for_traffic:
            return
        verdicts = " ".join([j.verdict, *(e.verdict for e in j.evidence)])
        now = time.monotonic()
        last = self.judged.get(step.id)
        if last is not None and (
            last[2] == j.at or (last[1] == verdicts and now - last[0] < JUDGE_EVERY)
        ):
            return
        self.judged[step.id] = (now, verdicts, j.at)
        self.console.print(f"    {judgement_text(j)}", soft_wrap=True)

    def _waiting(self, step: DeploymentStepOut) -> None:
        """While the judge lacks traffic: the count and the time left, with where to send
        traffic the first time; then again every WAIT_EVERY seconds it changed (on a
        terminal the live panel shows it at each look too)."""
        wait = step.waiting_for_traffic
        if not wait or step.state != "running":
            return
        now = time.monotonic()
        last = self.waits.get(step.id)
        if last is not None and (now - last[0] < WAIT_EVERY or last[1] == wait.requests):
            return
        self.waits[step.id] = (now, wait.requests)
        line = f"    [yellow]⏳ waiting for traffic: {escape(traffic_count(wait))}[/yellow]"
        if last is None:
            line += f" — {escape(traffic_hint(wait))}"
        self.console.print(line, soft_wrap=True)

    def _hosts(self, step: DeploymentStepOut, places: dict[str, Placement]) -> None:
        if step.state not in ("running", "succeeded") or step.kind == "verify":
            return
        done = self.hosts_done.setdefault(step.id, set())
        for host in step.hosts:
            place = places.get(host)
            if host in done:
                continue
            # a step succeeds only once all its hosts converged, maybe between two looks
            if step.state == "succeeded" or (
                place is not None and host_done(place, step.targets[host])
            ):
                done.add(host)
                self.console.print(
                    f"    [green]✓[/green] {host}: {weights(step.targets[host])} "
                    f"({len(done)}/{len(step.hosts)} hosts)"
                )


def host_done(place: Placement, targets: list[ReleaseWeight]) -> bool:
    """The host's agent applied what the step wrote and routes exactly its weights."""
    if not (place.online and place.converged):
        return False
    if {r.release: r.weight for r in place.desired} != {t.release: t.weight for t in targets}:
        return False
    routed = {r.release: r.weight for r in place.observed if r.weight > 0}
    return routed == {t.release: t.weight for t in targets if t.weight > 0}


def weights(items: list[ReleaseWeight]) -> str:
    return ", ".join(f"{r.release} {r.weight}%" for r in items) or "nothing"


def step_line(step: DeploymentStepOut) -> str:
    icon = ICONS.get(step.state, "·")
    after = f" in {took(step.duration)}" if step.duration is not None else ""
    why = f": {escape(step.reason)}" if step.reason else ""
    # a failed step's reason already says what its judge said: once is enough
    said = judgement_text(step.judgement, reasons=not step.reason)
    judged = f" — {said}" if step.judgement else ""
    return f"{icon} {escape(step.name)} {step.state}{after}{why}{judged}"


def panel(d: DeploymentOut, places: dict[str, Placement]) -> RenderableType:
    """The live part on a terminal: the deployment's state, its step underway and its hosts."""
    since = _since(d.started_at or d.created_at)
    head = Spinner("dots", text=f"{deployment_title(d)} · {state(d.state)} · {since}")
    parts: list[RenderableType] = [head]
    if d.state in PENDING:
        parts.append(f"  [yellow]{escape(d.reason or d.state)}[/yellow]")
    total = len([s for s in d.steps if s.kind != "rollback"])
    step = next((s for s in d.steps if s.state == "running"), None)
    if step is not None:
        label = step.name if step.kind == "rollback" else step_label(step, total)
        parts.append(f"  [bold]{escape(label)}[/bold]")
        if step.hosts:
            parts.append(Padding(_hosts_table(step, places), (0, 0, 0, 2), expand=False))
        wait = step.waiting_for_traffic
        if wait:
            parts.append(
                f"  [yellow]⏳ waiting for traffic: {escape(traffic_count(wait))}[/yellow]"
            )
            parts.append(f"  {escape(traffic_hint(wait))}")
        if step.judgement:
            parts.append(f"  {judgement_text(step.judgement)}")
            parts += [f"  {line}" for line in evidence_lines(step.judgement)]
    return Group(*parts)


def _hosts_table(step: DeploymentStepOut, places: dict[str, Placement]) -> Table:
    """Each host of the step underway: what the step wants, what its agent desires and runs."""
    table = Table("host", "agent", "step wants", "desired", "observed", "done", box=None)
    for host in step.hosts:
        place = places.get(host)
        want = step.targets[host]
        table.add_row(
            host,
            agent_state(place) if place else "-",
            weights(want),
            weights(place.desired) if place else "-",
            ", ".join(f"{r.release} {r.weight}% {state(r.phase)}" for r in place.observed)
            if place
            else "-",
            "[green]✓[/green]" if place and host_done(place, want) else "…",
        )
    return table


def _since(start: datetime) -> str:
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return took(max(0.0, (datetime.now(UTC) - start).total_seconds()))


def summary(d: DeploymentOut, console: Console) -> None:
    what = "rollback" if d.kind == "rollback" else "deployment"
    if d.state == "succeeded":
        console.print(
            f"[green bold]✓ {what} #{d.id} succeeded[/green bold] in {took(d.duration)}: "
            f"{d.environment} of {d.app} serves [bold]{d.release}[/bold]",
            soft_wrap=True,
        )
        return
    reason = f": {escape(d.reason)}" if d.reason else ""
    style = "red" if d.state == "failed" else "yellow"
    console.print(
        f"[{style} bold]✗ {what} #{d.id} {d.state}[/{style} bold]{reason}", soft_wrap=True
    )
    back = next((s for s in reversed(d.steps) if s.kind == "rollback"), None)
    if back is not None:
        outcome = "done" if back.state == "succeeded" else back.state
        note = f" ({escape(back.reason)})" if back.reason else ""
        console.print(f"↩ {escape(back.name)}: {outcome}{note}", soft_wrap=True)


def interruptible() -> None:
    """Ctrl-C (SIGINT) stops a command that runs until it: even when started from a parent
    that ignored or blocked it (a non-interactive shell's background job ignores SIGINT,
    and Python then installs no KeyboardInterrupt handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def follow_status(
    client: Client,
    app: str | None,
    console: Console,
    *,
    as_json: bool,
    interval: float = 1.0,
) -> None:
    """Redraw `conveyor status` until Ctrl-C; not on a terminal, print it again only when
    what it shows changed (with --json: a new JSON line per change of the records)."""
    last = None
    interruptible()
    try:
        if console.is_terminal and not as_json:
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(status_view(client.status(app), console))
                    live.refresh()
                    time.sleep(interval)
        while True:
            rows: list[AppStatus] = client.status(app)
            if as_json:
                text = json.dumps(wire(rows), default=str, sort_keys=True)
            else:
                with console.capture() as shown:
                    console.print(status_view(rows, console))
                text = shown.get()
            if text != last:
                last = text
                if as_json:
                    print(text, flush=True)
                else:
                    console.rule(datetime.now().strftime("%H:%M:%S"))
                    console.file.write(text)
                    console.file.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
