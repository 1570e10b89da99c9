"""`conveyor status` and `conveyor history`: what runs where, and what happened before."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt, fail
from conveyor.cli.render import (
    dora_view,
    history_table,
    out,
    print_json,
    runs_table,
    status_view,
)
from conveyor.cli.watch import follow_status
from conveyor.client import wire


def status(
    app_name: Annotated[str | None, typer.Argument(metavar="APP")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep it up to date until Ctrl-C (with --json: one JSON line per change).",
        ),
    ] = False,
    dora: Annotated[
        bool,
        typer.Option(
            "--dora",
            help="The four delivery metrics per environment instead: deployment frequency, "
            "lead time for changes, change failure rate, time to restore.",
        ),
    ] = False,
    days: Annotated[
        float, typer.Option(help="With --dora: the window, this many days up to now.", min=0.01)
    ] = 30,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What runs where: releases, weights and health per host, deployments and runs underway.

    Per environment: the release serving it, the deployment underway and its step, the last
    one that ended. Per host: each release's desired and observed weight, its phase, the agent.
    With --dora: how well delivery goes, per app and environment (--json: a list of reports).
    """
    if dora and follow:
        fail("--dora and --follow do not go together", 2)
    client = Client(server, token, ca)
    if dora:
        names = [app_name] if app_name else [a.name for a in client.apps()]
        reports = [client.dora(n, days) for n in names]
        if as_json:
            print_json(wire(reports))
        else:
            out.print(dora_view(reports))
        return
    if follow:
        follow_status(client, app_name, out, as_json=as_json)
        return
    rows = client.status(app_name)
    if as_json:
        print_json(wire(rows))
        return
    out.print(status_view(rows))


def history(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[
        str | None, typer.Argument(metavar="ENV", help="Only this environment's deployments.")
    ] = None,
    runs: Annotated[
        bool,
        typer.Option(
            "--runs/--deployments",
            help="List runs (tests, build) instead of deployments.",
            show_default=False,
        ),
    ] = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deployments with result, duration, trigger, approver, release and the one before.

    With --runs: the app's runs (tests, build, release) instead.

    --json: the records of GET /api/deployments (or /api/runs), a list, empty if none.
    """
    if env is not None and runs:
        fail("ENV selects deployments; leave it out to list runs with --runs", 2)
    client = Client(server, token, ca)
    if runs:
        found = client.runs(app_name, limit)
        if as_json:
            print_json(wire(found))
        elif found:
            out.print(runs_table(found))
        else:
            out.print(f"no runs of {app_name} yet")
        return
    rows = client.deployments(app_name, env, limit)
    if as_json:
        print_json(wire(rows))
    elif rows:
        out.print(history_table(rows))
    else:
        where = f" to {env}" if env else ""
        out.print(
            f"no deployments of {app_name}{where} yet; `conveyor history {app_name} --runs` "
            "lists its runs"
        )


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(history)
