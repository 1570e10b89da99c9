"""What the CLI prints: consoles, JSON, and records (runs, deployments, hosts) as Rich text.

Pure functions from the API's JSON to renderables, so `status`, `history` and the
deployment follower draw the same things the same way.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from conveyor.cli.follow import ICONS as RUN_ICONS
from conveyor.cli.follow import step_title

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Record = dict[str, Any]

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


def when(stamp: str) -> str:
    """A server timestamp (UTC) to the second, for tables."""
    return stamp[:19].replace("T", " ")


# -- deployments -------------------------------------------------------------------


def deployment_title(d: Record) -> str:
    """`deployment #7 (rolling) of sample to production: release R (was P)`."""
    what = "rollback" if d["kind"] == "rollback" else "deployment"
    was = f" (was {d['previous_release']})" if d.get("previous_release") else ""
    return (
        f"{what} #{d['id']} ({d['strategy']}) of {d['app']} to {d['environment']}: "
        f"release [bold]{d['release']}[/bold]{was}"
    )


def step_label(step: Record, total: int | None = None) -> str:
    where = f"step {step['position'] + 1}/{total} " if total else ""
    return f"{where}{step['name']}"


def judgement_text(j: Record | None) -> str:
    """The canary judge's last word: verdict, request count, error rate, p99, reasons."""
    if not j:
        return ""
    verdict = {"pass": "green", "fail": "red"}.get(j["verdict"], "yellow")
    parts = [f"[{verdict}]{j['verdict']}[/{verdict}]", f"{j['requests']} requests"]
    if j.get("error_rate") is not None:
        parts.append(f"error rate {j['error_rate'] * 100:.2f}%")
    if j.get("p99") is not None:
        parts.append(f"p99 {j['p99'] * 1000:.0f} ms")
    reasons = "; ".join(j.get("reasons") or [])
    return "judge: " + ", ".join(parts) + (f" ({reasons})" if reasons else "")


def underway(d: Record | None) -> str:
    """A deployment in one line, for status: `#9 running: 50% of traffic to R (step 3/5)`."""
    if d is None:
        return "-"
    steps = [s for s in d.get("steps", []) if s["kind"] != "rollback"]
    current = next((s for s in d.get("steps", []) if s["state"] == "running"), None)
    text = f"#{d['id']} {d['kind']} {d['release']} {state(d['state'])}"
    if current is not None:
        text += f": {current['name']}"
        if current["kind"] != "rollback" and steps:
            text += f" (step {current['position'] + 1}/{len(steps)})"
    elif d.get("step"):
        text += f": {d['step']}"
    if d["state"] in ("queued", "waiting", "rolling_back", "aborting") and d.get("reason"):
        text += f" — {d['reason']}"
    return text


def history_table(rows: list[Record]) -> Table:
    table = Table(
        "deployment",
        "environment",
        "release",
        "previous",
        "state",
        "duration",
        "trigger",
        "approved by",
        "started",
        "reason",
    )
    for d in rows:
        reason = d.get("reason") or ""
        if d.get("forced_by"):
            forced = f"forced by {d['forced_by']}: {d.get('force_reason') or ''}"
            reason = f"{forced}; {reason}" if reason else forced
        table.add_row(
            f"#{d['id']}" + (" rollback" if d["kind"] == "rollback" else ""),
            d["environment"],
            d["release"],
            d.get("previous_release") or "-",
            state(d["state"]),
            took(d.get("duration")),
            f"{d['trigger']}: {d['triggered_by']}",
            d.get("approved_by") or "-",
            when(d.get("started_at") or d["created_at"]),
            Text(reason),
        )
    return table


def runs_table(rows: list[Record]) -> Table:
    table = Table("run", "commit", "state", "duration", "trigger", "by", "release", "started")
    for r in rows:
        table.add_row(
            f"#{r['id']}",
            (r["sha"] or "")[:7] or "(head)",
            state(r["state"]),
            took(r["duration"]),
            r["trigger"],
            r["triggered_by"],
            r["release"] or "-",
            when(r["started_at"] or r["created_at"]),
        )
    return table


# -- hosts and status ------------------------------------------------------------------


def agent_state(place: Record) -> str:
    if not place["online"]:
        return "[red]offline[/red]"
    return "[green]online[/green]" if place["converged"] else "[yellow]converging[/yellow]"


def weight_rows(place: Record) -> list[tuple[str, str, str, str, str]]:
    """One row per release a host should run or runs: desired and observed weight side by side."""
    desired = {r["release"]: r["weight"] for r in place["desired"]}
    observed = {r["release"]: r for r in place["observed"]}
    rows = []
    for release in [*desired, *(r for r in observed if r not in desired)]:
        seen = observed.get(release)
        rows.append(
            (
                release,
                f"{desired[release]}%" if release in desired else "-",
                f"{seen['weight']}%" if seen else "-",
                state(seen["phase"]) if seen else "-",
                (seen.get("error") or "") if seen else "",
            )
        )
    if not rows:
        rows.append(("-", "-", "-", "-", place.get("error") or ""))
    elif place.get("error"):
        rows[0] = (*rows[0][:4], place["error"])
    return rows


def status_view(rows: list[Record]) -> RenderableType:
    """`conveyor status`: runs per app, each environment's release and deployment, each host."""
    if not rows:
        return Text("no apps yet: `conveyor app add NAME --repo URL`")
    runs = Table("app", "branch", "underway", "last run", "last release")
    for row in rows:
        active = (
            ", ".join(
                f"#{r['id']} {state(r['state'])} {_running_step(r)}".strip()
                for r in row["active_runs"]
            )
            or "-"
        )
        last = row["last_run"]
        release = row["last_release"]
        runs.add_row(
            row["app"]["name"],
            row["app"]["branch"],
            active,
            f"#{last['id']} {state(last['state'])} {last['sha'][:7]}" if last else "-",
            release["id"] if release else "-",
        )
    parts: list[RenderableType] = [runs]

    envs = Table("app", "environment", "strategy", "serving", "underway", "last ended")
    for row in rows:
        for env in row.get("environments", []):
            last = env.get("last")
            envs.add_row(
                row["app"]["name"],
                env["name"],
                env["strategy"],
                env.get("release") or "-",
                underway(env.get("deployment")),
                f"#{last['id']} {last['kind']} {last['release']} {state(last['state'])}"
                if last
                else "-",
            )
    if envs.row_count:
        parts.append(envs)

    judged = Table("app", "environment", "deployment", "judge and its evidence")
    for row in rows:
        for env in row.get("environments", []):
            found = next(
                (f for d in (env.get("deployment"), env.get("last")) if (f := _judged(d))), None
            )
            if found is None:
                continue
            d, step = found
            judged.add_row(
                row["app"]["name"],
                env["name"],
                f"#{d['id']} {escape(step['name'])}",
                "\n".join([judgement_text(step["judgement"]), *evidence_lines(step["judgement"])]),
            )
    if judged.row_count:
        parts.append(judged)

    hosts = Table(
        "app", "environment", "host", "agent", "release", "desired", "observed", "phase", "note"
    )
    for row in rows:
        env_of = {p["host"]: e["name"] for e in row.get("environments", []) for p in e["hosts"]}
        for place in row["hosts"]:
            for i, (release, desired, observed, phase, note) in enumerate(weight_rows(place)):
                first = i == 0
                hosts.add_row(
                    row["app"]["name"] if first else "",
                    env_of.get(place["host"], "-") if first else "",
                    place["host"] if first else "",
                    agent_state(place) if first else "",
                    release,
                    desired,
                    observed,
                    phase,
                    Text(note),
                )
    if hosts.row_count:
        parts.append(hosts)
    return Group(*parts)


def _judged(d: Record | None) -> tuple[Record, Record] | None:
    """A deployment's latest step with a judgement, if any."""
    if not d:
        return None
    steps = [s for s in d.get("steps", []) if s.get("judgement")]
    return (d, steps[-1]) if steps else None


def evidence_lines(j: Record | None) -> list[str]:
    """One line per check of the judge: what it counted, the statistic and its threshold."""
    if not j:
        return []
    colour = {"pass": "green", "fail": "red"}
    return [
        f"  [{colour.get(e['verdict'], 'yellow')}]{e['verdict']}[/] {escape(e['check'])}: "
        f"{escape(e['summary'])}"
        for e in j.get("evidence") or []
    ]


def _running_step(run: Record) -> str:
    running = [s for s in run.get("steps", []) if s["state"] == "running"]
    return f"({step_title(running[-1])})" if running else ""


# -- delivery metrics ------------------------------------------------------------------


def dora_view(reports: list[Record]) -> RenderableType:
    """`conveyor status --dora`: the four delivery metrics per app and environment."""
    if not reports:
        return Text("no apps yet: `conveyor app add NAME --repo URL`")
    days = reports[0]["days"]
    table = Table(
        "app",
        "environment",
        "deploys",
        "frequency",
        "lead time",
        "lead time p90",
        "change failure rate",
        "time to restore",
        title=f"delivery metrics over the last {days:g} days",
    )
    from_run = 0
    for report in reports:
        for env in report["environments"]:
            from_run += env["lead_time_from_run"]
            mark = "*" if env["lead_time_from_run"] else ""
            rate = env["change_failure_rate"]
            failed = f"{env['failed_changes']}/{env['changes']}"
            restored = f"{env['restored']}/{env['failures']} restored"
            freq = env["deployment_frequency"]
            table.add_row(
                report["app"],
                env["environment"],
                str(env["deployments"]),
                "-" if freq is None else f"{freq:.2f}/day",
                took(env["lead_time"]) + mark,
                took(env["lead_time_p90"]) + mark,
                "-" if rate is None else f"{rate * 100:.0f}% ({failed})",
                took(env["time_to_restore"]) + (f" ({restored})" if env["failures"] else ""),
            )
    if not from_run:
        return table
    note = Text(
        f"* {from_run} lead time(s) counted from the run's start: the commit time was unknown",
        style="dim",
    )
    return Group(table, note)
