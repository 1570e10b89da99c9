"""`conveyor deploy / rollback / approve / abort`: one HTTP call each, then maybe follow."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt, fail
from conveyor.cli.render import deployment_title, err, out, print_json
from conveyor.cli.watch import follow_deployment
from conveyor.client import wire
from conveyor.protocol import DeploymentOut

AppArg = Annotated[str, typer.Argument(metavar="APP", help="The app.")]
EnvArg = Annotated[str, typer.Argument(metavar="ENV", help="The environment, as in conveyor.yml.")]
FollowOpt = Annotated[
    bool,
    typer.Option(
        "--follow",
        "-f",
        help="Show progress until it ends; exit 0 if it succeeded, 1 if it failed, rolled "
        "back or was cancelled. With --json, only the final record is printed on stdout.",
    ),
]


def deploy(
    app_name: AppArg,
    env: EnvArg,
    release: Annotated[
        str | None,
        typer.Option(help="The release to deploy (default: the newest that passes the gates)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start outside the deployment window (admin token, needs --reason)."
        ),
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why the window is forced.")] = None,
    follow: FollowOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a release that already passed the earlier environments.

    Refused (exit 2, with the reason) when its tests failed, it has not passed the earlier
    environment, or the last environment's commit is not on the branch.

    An approval gate or a closed deployment window holds it in `waiting`.
    """
    if reason is not None and not force:
        fail("--reason explains --force: add --force or leave --reason out", 2)
    client = Client(server, token, ca)
    body = {"release": release, "force": force, "reason": reason}
    created = client.deploy(app_name, env, body)
    _done(client, created, follow=follow, as_json=as_json)


def rollback(
    app_name: AppArg,
    env: EnvArg,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="RELEASE",
            help="A release this environment ran before (default: "
            "the one served before the current one).",
        ),
    ] = None,
    follow: FollowOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back to the previous release (or the one named); stops a deployment underway."""
    client = Client(server, token, ca)
    created = client.rollback(app_name, env, to)
    _done(client, created, follow=follow, as_json=as_json)


def _done(client: Client, created: DeploymentOut, *, follow: bool, as_json: bool) -> None:
    title = deployment_title(created)
    if not follow:
        if as_json:
            print_json(wire(created))
        else:
            out.print(f"{title}: {created.state}")
        return
    console = err if as_json else out
    console.print(f"{title}; {created.trigger} by {created.triggered_by}", soft_wrap=True)
    try:
        final = follow_deployment(client, created.id, console)
    except KeyboardInterrupt:
        err.print(
            f"stopped following; the deployment goes on "
            f"(`conveyor abort --deployment {created.id}` stops it)"
        )
        raise typer.Exit(130) from None
    if as_json:
        print_json(wire(final))
    raise typer.Exit(0 if final.state == "succeeded" else 1)


def approve(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="The run whose release waits.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer the approval gate of a run's release; exit 2 if nothing of it waits."""
    approved = Client(server, token, ca).approve(run_id)
    if as_json:
        print_json(wire(approved))
        return
    for d in approved:
        out.print(f"[green]approved[/green] by {d.approved_by}: {deployment_title(d)}")


def abort(
    run_id: Annotated[int | None, typer.Argument(metavar="RUN", help="The run to stop.")] = None,
    deployment: Annotated[
        int | None,
        typer.Option(
            "--deployment", "-d", metavar="ID", help="Stop this deployment instead of a run."
        ),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a run, or one deployment with --deployment ID; what they changed rolls back.

    A run's running step is killed and nothing is released.

    Its deployments underway, or the one named, go back to the release served before.

    `conveyor history APP` lists deployment ids.
    """
    if (run_id is None) == (deployment is None):
        fail("give a RUN, or --deployment ID (not both)", 2)
    client = Client(server, token, ca)
    if deployment is not None:
        d = client.abort_deployment(deployment)
        if as_json:
            print_json(wire(d))
            return
        why = f" ({d.reason})" if d.reason else ""
        out.print(f"deployment #{d.id}: {d.state}{why}")
        return
    assert run_id is not None
    result = client.abort_run(run_id)
    if as_json:
        print_json(wire(result))
        return
    out.print(f"run {run_id}: {result.state}")


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(rollback)
    app.command()(approve)
    app.command()(abort)
