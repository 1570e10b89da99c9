"""The tables of `conveyor app list`, `host list` and `token list`, fitted to the terminal."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.table import Table

from conveyor.cli.render import out
from conveyor.cli.tables import Column, fitted
from conveyor.protocol import AppOut, HostOut, ObservedApp, TokenOut


def apps_table(rows: list[AppOut], console: Console | None = None) -> Table:
    """Apps with their repository, branch and polling."""
    cells: list[list[RenderableType]] = [
        [row.name, row.repo, row.branch, f"{row.poll_interval}s" if row.poll_interval else "-"]
        for row in rows
    ]
    columns = [Column("app"), Column("repository"), Column("branch"), Column("polling", drop=1)]
    return fitted(console or out, columns, cells)


def hosts_table(rows: list[HostOut], console: Console | None = None) -> Table:
    """Hosts with their state and, per app, the releases they run."""
    cells: list[list[RenderableType]] = []
    for row in rows:
        state = (
            row.state
            if row.state != "enrolled"
            else ("[green]online[/green]" if row.online else "[red]offline[/red]")
        )
        converged = "yes" if row.applied_generation == row.generation else "no"
        seen = row.last_seen.strftime("%Y-%m-%d %H:%M:%S") if row.last_seen else "-"
        apps: list[ObservedApp | None] = [None]
        if row.observed and row.observed.apps:
            apps = list(row.observed.apps)
        for i, app_obs in enumerate(apps):
            releases = "-"
            if app_obs:
                releases = ", ".join(f"{r.release} {r.weight}% {r.phase}" for r in app_obs.releases)
            cells.append(
                [
                    row.name if i == 0 else "",
                    state if i == 0 else "",
                    seen if i == 0 else "",
                    converged if i == 0 else "",
                    ((row.observed.agent_version if row.observed else None) or "-")
                    if i == 0
                    else "",
                    app_obs.app if app_obs else "-",
                    releases,
                ]
            )
    columns = [
        Column("host"),
        Column("state"),
        Column("seen", drop=2),
        Column("converged", drop=1),
        Column("agent", drop=3),
        Column("app"),
        Column("releases (weight, phase)", wrap=True, min_width=20),
    ]
    return fitted(console or out, columns, cells)


def tokens_table(rows: list[TokenOut], console: Console | None = None) -> Table:
    """API tokens: never the secret, which is shown once."""
    cells: list[list[RenderableType]] = [
        [
            str(row.id),
            row.name,
            row.role,
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if row.revoked else "",
        ]
        for row in rows
    ]
    columns = [Column("id"), Column("name"), Column("role"), Column("created"), Column("revoked")]
    return fitted(console or out, columns, cells)
