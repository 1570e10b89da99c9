"""What the CLI prints: consoles, JSON, and records (runs, deployments, hosts) as Rich text.

Pure functions from the API's records (the models of conveyor.protocol, as the typed
client returns them) to renderables, so `status`, `history` and the deployment follower
draw the same things the same way.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from conveyor.cli.follow import ICONS as RUN_ICONS
from conveyor.cli.follow import step_title
from conveyor.cli.tables import Column, fitted
from conveyor.protocol import (
    AppStatus,
    DeploymentOut,
    DeploymentStepOut,
    DoraReport,
    Holdback,
    Judgement,
    PendingContract,
    Placement,
    RunOut,
)

# a message is one line however long (the terminal folds it, a pipe keeps it whole):
# Rich would break it at the console's width, and a path or command with it
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLE = {
    "succeeded": "green",
    "healthy": "green",
    "failed": "red",
    "running": "cyan",
    "starting": "cyan",
    "rolling_back": "magenta",
    "aborting": "magenta",
    "queued": "yellow",
    "waiting": "yellow",
    "draining": "yellow",
    "warm": "yellow",
    "cancelled": "yellow",
}
ICONS = {**RUN_ICONS, "superseded": "[yellow]⊘[/yellow]"}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def bare(text: str, console: Console | None = None) -> None:
    """A line meant to be copied (a command, an export): as it is, never wrapped or styled.

    Rich wraps long lines at the console's width by inserting line breaks, which breaks
    a command pasted from a narrow terminal or read from a pipe.
    """
    target = console or out
    target.file.write(text + "\n")
    target.file.flush()


def state(value: str) -> str:
    style = STATE_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else value


def took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def when(stamp: datetime) -> str:
    """A server timestamp (UTC) as month-day hour:minute, for narrow tables: `12-05 20:53`."""
    return stamp.strftime("%m-%d %H:%M")


# -- deployments -------------------------------------------------------------------


def deployment_title(d: DeploymentOut) -> str:
    """`deployment #7 (rolling) of sample to production: release R (was P)`."""
    what = "rollback" if d.kind == "rollback" else "deployment"
    was = f" (was {d.previous_release})" if d.previous_release else ""
    return (
        f"{what} #{d.id} ({d.strategy}) of {d.app} to {d.environment}: "
        f"release [bold]{d.release}[/bold]{was}"
    )


def step_label(step: DeploymentStepOut, total: int | None = None) -> str:
    where = f"step {step.position + 1}/{total} " if total else ""
    return f"{where}{step.name}"


def judgement_text(j: Judgement | None, *, reasons: bool = True) -> str:
    """The canary judge's last word: verdict, request count, error rate, p99, reasons.

    `reasons=False` leaves the reasons out, for a line that already gives them (a failed
    step's reason quotes its judge's).
    """
    if not j:
        return ""
    verdict = {"pass": "green", "fail": "red"}.get(j.verdict, "yellow")
    parts = [f"[{verdict}]{j.verdict}[/{verdict}]", f"{j.requests} requests"]
    if j.error_rate is not None:
        parts.append(f"error rate {j.error_rate * 100:.2f}%")
    if j.p99 is not None:
        parts.append(f"p99 {j.p99 * 1000:.0f} ms")
    why = "; ".join(j.reasons) if reasons else ""
    return "judge: " + ", ".join(parts) + (f" ({escape(why)})" if why else "")


def underway(d: DeploymentOut | None) -> str:
    """A deployment in one line, for status: `#9 running: 50% of traffic to R (step 3/5)`."""
    if d is None:
        return "-"
    steps = [s for s in d.steps if s.kind != "rollback"]
    current = next((s for s in d.steps if s.state == "running"), None)
    text = f"#{d.id} {d.kind} {d.release} {state(d.state)}"
    if current is not None:
        text += f": {current.name}"
        if current.kind != "rollback" and steps:
            text += f" (step {current.position + 1}/{len(steps)})"
    elif d.step:
        text += f": {d.step}"
    if d.state in ("queued", "waiting", "rolling_back", "aborting") and d.reason:
        text += f" — {d.reason}"
    return text


def history_table(rows: list[DeploymentOut], console: Console | None = None) -> Table:
    """Deployments, newest first; at 80 columns: id, environment, release, state, start, reason."""
    columns = [
        Column("deployment"),
        Column("environment"),
        Column("release"),
        Column("previous", drop=4),
        Column("state"),
        Column("took", drop=3),
        Column("trigger", drop=5, wrap=True, min_width=14),
        Column("approved by", drop=6),
        Column("started", drop=2),
        Column("reason", wrap=True),
    ]
    cells: list[list[RenderableType]] = []
    for d in rows:
        reason = d.reason or ""
        if d.forced_by:
            forced = f"forced by {d.forced_by}: {d.force_reason or ''}"
            reason = f"{forced}; {reason}" if reason else forced
        cells.append(
            [
                f"#{d.id}" + (" rollback" if d.kind == "rollback" else ""),
                d.environment,
                d.release,
                d.previous_release or "-",
                state(d.state),
                took(d.duration),
                f"{d.trigger}: {d.triggered_by}",
                d.approved_by or "-",
                when(d.started_at or d.created_at),
                Text(reason),
            ]
        )
    if not any(d.approved_by for d in rows):
        columns, cells = columns[:7] + columns[8:], [c[:7] + c[8:] for c in cells]
    return fitted(console or out, columns, cells)


def runs_table(rows: list[RunOut], console: Console | None = None) -> Table:
    columns = [
        Column("run"),
        Column("commit"),
        Column("state"),
        Column("took", drop=1),
        Column("trigger", drop=3),
        Column("by", drop=4),
        Column("release"),
        Column("started", drop=2),
    ]
    cells: list[list[RenderableType]] = [
        [
            f"#{r.id}",
            r.sha[:7] or "(head)",
            state(r.state),
            took(r.duration),
            f"{r.trigger} PR #{r.pull_request.number}" if r.pull_request else r.trigger,
            r.triggered_by,
            r.release or "-",
            when(r.started_at or r.created_at),
        ]
        for r in rows
    ]
    return fitted(console or out, columns, cells)


# -- hosts and status ------------------------------------------------------------------


def agent_state(place: Placement) -> str:
    if not place.online:
        return "[red]offline[/red]"
    return "[green]online[/green]" if place.converged else "[yellow]converging[/yellow]"


def weight_rows(place: Placement) -> list[tuple[str, str, str, str, str]]:
    """One row per release a host should run or runs: desired and observed weight side by side."""
    desired = {r.release: r.weight for r in place.desired}
    observed = {r.release: r for r in place.observed}
    rows = []
    for release in [*desired, *(r for r in observed if r not in desired)]:
        seen = observed.get(release)
        rows.append(
            (
                release,
                f"{desired[release]}%" if release in desired else "-",
                f"{seen.weight}%" if seen else "-",
                state(seen.phase) if seen else "-",
                (seen.error or "") if seen else "",
            )
        )
    if not rows:
        rows.append(("-", "-", "-", "-", place.error or ""))
    elif place.error:
        rows[0] = (*rows[0][:4], place.error)
    return rows


def status_view(rows: list[AppStatus], console: Console | None = None) -> RenderableType:
    """`conveyor status`: runs per app, each environment's release and deployment, each host."""
    if not rows:
        return Text("no apps yet: `conveyor app add NAME --repo URL`")
    console = console or out
    one_app = 1 if len(rows) == 1 else 0  # the app column goes first when all rows share it
    parts: list[RenderableType] = [
        fitted(
            console,
            [
                Column("app"),
                Column("branch", drop=1),
                Column("underway", wrap=True),
                Column("last run"),
                Column("last release"),
            ],
            _run_rows(rows),
        )
    ]

    envs = _environment_rows(rows)
    if envs:
        columns = [
            Column("app", drop=3 * one_app),
            Column("environment"),
            Column("strategy", drop=2),
            Column("serving"),
            Column("underway", wrap=True),
            Column("last ended", wrap=True, min_width=12),
        ]
        parts.append(fitted(console, columns, envs))

    judged = _judged_rows(rows)
    if judged:
        columns = [
            Column("app", drop=2 * one_app),
            Column("environment"),
            Column("deployment", wrap=True, min_width=12),
            Column("judge and its evidence", wrap=True, min_width=30),
        ]
        parts.append(fitted(console, columns, judged))

    hosts = _host_rows(rows)
    if hosts:
        columns = [
            Column("app", drop=4 * one_app),
            Column("environment", drop=3),
            Column("host"),
            Column("agent"),
            Column("release"),
            Column("desired", drop=1),
            Column("observed"),
            Column("phase", drop=2),
            Column("note", wrap=True, min_width=12),
        ]
        parts.append(fitted(console, columns, hosts))
    return Group(*parts)


def _run_rows(rows: list[AppStatus]) -> list[list[RenderableType]]:
    """One row per app: its branch, the runs underway, its last run and last release."""
    runs: list[list[RenderableType]] = []
    for row in rows:
        active = (
            ", ".join(
                f"#{r.id} {state(r.state)} {_running_step(r)}".strip() for r in row.active_runs
            )
            or "-"
        )
        last = row.last_run
        release = row.last_release
        runs.append(
            [
                row.app.name,
                row.app.branch,
                active,
                f"#{last.id} {state(last.state)} {last.sha[:7]}" if last else "-",
                release.id if release else "-",
            ]
        )
    return runs


def _environment_rows(rows: list[AppStatus]) -> list[list[RenderableType]]:
    """One row per environment: its strategy, what it serves, what is underway and last ended."""
    envs: list[list[RenderableType]] = []
    for row in rows:
        for env in row.environments:
            last = env.last
            envs.append(
                [
                    row.app.name,
                    env.name,
                    env.strategy,
                    env.release or "-",
                    underway(env.deployment)
                    + holdback_text(env.holdback)
                    + contract_text(env.contract),
                    f"#{last.id} {last.kind} {last.release} {state(last.state)}" if last else "-",
                ]
            )
    return envs


def contract_text(c: PendingContract | None) -> str:
    """A contract migration not applied yet: when it runs, or why it waits."""
    if not c:
        return ""
    if c.waiting is None:
        return f"; contract of {c.release} pending: runs first in the next deployment"
    return f"; contract pending: {c.waiting}"


def holdback_text(h: Holdback | None) -> str:
    """While a watch window holds back traffic: `; holdback 5% on R until 12:04:05`."""
    if not h:
        return ""
    until = f" until {h.until.strftime('%H:%M:%S')} UTC" if h.until else ""
    return f"; holdback {h.share}% on {h.release}{until}"


def _judged_rows(rows: list[AppStatus]) -> list[list[RenderableType]]:
    """One row per environment whose current or last deployment has a judged step."""
    judged: list[list[RenderableType]] = []
    for row in rows:
        for env in row.environments:
            found = next((f for d in (env.deployment, env.last) if (f := _judged(d))), None)
            if found is None:
                continue
            d, step = found
            judged.append(
                [
                    row.app.name,
                    env.name,
                    f"#{d.id} {escape(step.name)}",
                    "\n".join([judgement_text(step.judgement), *evidence_lines(step.judgement)]),
                ]
            )
    return judged


def _host_rows(rows: list[AppStatus]) -> list[list[RenderableType]]:
    """One row per release on each host; the host's own columns only on its first row."""
    hosts: list[list[RenderableType]] = []
    for row in rows:
        env_of = {p.host: e.name for e in row.environments for p in e.hosts}
        for place in row.hosts:
            for i, (release, desired, observed, phase, note) in enumerate(weight_rows(place)):
                first = i == 0
                hosts.append(
                    [
                        row.app.name if first else "",
                        env_of.get(place.host, "-") if first else "",
                        place.host if first else "",
                        agent_state(place) if first else "",
                        release,
                        desired,
                        observed,
                        phase,
                        Text(note),
                    ]
                )
    return hosts


def _judged(d: DeploymentOut | None) -> tuple[DeploymentOut, DeploymentStepOut] | None:
    """A deployment's latest step with a judgement, if any."""
    if not d:
        return None
    steps = [s for s in d.steps if s.judgement]
    return (d, steps[-1]) if steps else None


def evidence_lines(j: Judgement | None) -> list[str]:
    """One line per check of the judge: what it counted, the statistic and its threshold."""
    if not j:
        return []
    colour = {"pass": "green", "fail": "red"}
    return [
        f"  [{colour.get(e.verdict, 'yellow')}]{e.verdict}[/] {escape(e.check)}: "
        f"{escape(e.summary)}"
        for e in j.evidence
    ]


def _running_step(run: RunOut) -> str:
    running = [s for s in run.steps if s.state == "running"]
    return f"({step_title(running[-1])})" if running else ""


# -- delivery metrics ------------------------------------------------------------------


def dora_view(reports: list[DoraReport], console: Console | None = None) -> RenderableType:
    """`conveyor status --dora`: the four delivery metrics per app and environment."""
    if not reports:
        return Text("no apps yet: `conveyor app add NAME --repo URL`")
    days = reports[0].days
    columns = [
        Column("app", drop=2 if len(reports) == 1 else 0),
        Column("environment"),
        Column("deploys", drop=1),
        Column("frequency"),
        Column("lead time"),
        Column("lead time p90", drop=3),
        Column("change failure rate", wrap=True, min_width=10),
        Column("time to restore", wrap=True, min_width=10),
    ]
    cells: list[list[RenderableType]] = []
    from_run = 0
    for report in reports:
        for env in report.environments:
            from_run += env.lead_time_from_run
            mark = "*" if env.lead_time_from_run else ""
            rate = env.change_failure_rate
            failed = f"{env.failed_changes}/{env.changes}"
            restored = f"{env.restored}/{env.failures} restored"
            freq = env.deployment_frequency
            cells.append(
                [
                    report.app,
                    env.environment,
                    str(env.deployments),
                    "-" if freq is None else f"{freq:.2f}/day",
                    took(env.lead_time) + mark,
                    took(env.lead_time_p90) + mark,
                    "-" if rate is None else f"{rate * 100:.0f}% ({failed})",
                    took(env.time_to_restore) + (f" ({restored})" if env.failures else ""),
                ]
            )
    table = fitted(
        console or out, columns, cells, title=f"delivery metrics over the last {days:g} days"
    )
    if not from_run:
        return table
    note = Text(
        f"* {from_run} lead time(s) counted from the run's start: the commit time was unknown",
        style="dim",
    )
    return Group(table, note)
