"""`conveyor`'s client commands: thin clients of the HTTP API.

The process launchers (server, agent, router, demo) are added in conveyor.entry.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor import __version__
from conveyor.cli import controls, deploy, migrations, status
from conveyor.cli.chain import follow_chain
from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt, fail
from conveyor.cli.flags import flags_cli
from conveyor.cli.follow import FINAL, follow_run, step_title
from conveyor.cli.listing import apps_table, hosts_table, tokens_table
from conveyor.cli.pulls import pull_request_lines
from conveyor.cli.render import bare, err, out, print_json
from conveyor.cli.secrets import secrets_cli
from conveyor.client import wire
from conveyor.config import (
    ConfigError,
    config_json_schema,
    load_config,
    starter_config,
    suggest_app_name,
)

app = typer.Typer(
    name="conveyor",
    help="Self-hosted continuous deployment: from a push to production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
apps_cli = typer.Typer(help="Register and list apps.", no_args_is_help=True)
tokens_cli = typer.Typer(
    help="API tokens with a role (viewer, deployer, admin; runner for `conveyor runner`).",
    no_args_is_help=True,
)
hosts_cli = typer.Typer(help="Hosts running `conveyor agent`.", no_args_is_help=True)
app.add_typer(apps_cli, name="app")
app.add_typer(hosts_cli, name="host")
app.add_typer(tokens_cli, name="token")
app.add_typer(secrets_cli, name="secret")
app.add_typer(flags_cli, name="flag")


def _print_version(value: bool) -> None:
    if value:
        bare(f"conveyor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print conveyor's version and exit.",
        ),
    ] = False,
) -> None:
    """Self-hosted continuous deployment: from a push to production."""


# -- config ---------------------------------------------------------------------


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The config to check.")] = Path("conveyor.yml"),
) -> None:
    """Check a conveyor.yml; exit 1 with line-numbered errors."""
    if not file.is_file():
        fail(f"{file}: no such file", 2)
    try:
        config = load_config(file)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(line, style="red", soft_wrap=True, markup=False)
        err.print(f"{file}: {len(exc.issues)} error(s)", style="red", soft_wrap=True, markup=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror or exc})", 2)
    envs = ", ".join(config.environments) or "none"
    out.print(f"[green]{file}: ok[/green] (app {config.app}, environments: {envs})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of conveyor.yml."""
    print_json(config_json_schema())


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="Overwrite an existing conveyor.yml.")] = False,
    name: Annotated[str | None, typer.Option(help="App name (default: the directory's).")] = None,
) -> None:
    """Write a commented conveyor.yml for the repository you stand in."""
    target = Path("conveyor.yml")
    if target.exists() and not force:
        fail("conveyor.yml already exists (use --force to overwrite)", 2)
    app_name = name or suggest_app_name(Path.cwd())
    target.write_text(starter_config(app_name, Path.cwd()))
    out.print(f"wrote {target}: edit it, then check it with `conveyor validate`")


# -- apps -----------------------------------------------------------------------


@apps_cli.command("add")
def app_add(
    name: str,
    repo: Annotated[str, typer.Option(help="Any URL git can clone, local paths included.")],
    branch: Annotated[str, typer.Option(help="The branch whose pushes start runs.")] = "main",
    poll: Annotated[
        int | None, typer.Option(help="Also poll the repository every N seconds.")
    ] = None,
    forge_api: Annotated[
        str | None,
        typer.Option(help="The forge's API base URL, for pull requests' commit statuses."),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an app; prints its webhook URLs and secret."""
    if re.match(r"^[./~]", repo) and Path(repo).expanduser().exists():
        repo = str(Path(repo).expanduser().resolve())
    created = Client(server, token, ca).add_app(
        {"name": name, "repo": repo, "branch": branch, "poll_interval": poll}
        | ({"forge_api": forge_api} if forge_api else {})
    )
    if as_json:
        print_json(wire(created))
        return
    out.print(f"[green]app {created.name} registered[/green] ({created.repo}, branch {branch})")
    bare(f"webhook secret: {created.webhook_secret}")
    for provider, hook_url in created.webhooks.model_dump().items():
        bare(f"  {provider:7} {hook_url}")
    out.print(f"bare repository on your server: `conveyor hook-script {name}` > hooks/post-receive")


@apps_cli.command("set")
def app_set(
    name: str,
    repo: Annotated[str | None, typer.Option(help="A new repository URL.")] = None,
    branch: Annotated[str | None, typer.Option(help="The branch whose pushes start runs.")] = None,
    poll: Annotated[
        int | None, typer.Option(help="Poll the repository every N seconds; 0 turns it off.")
    ] = None,
    public_status: Annotated[
        bool | None,
        typer.Option(
            "--public-status/--no-public-status",
            help="A read-only status page at /status/NAME that anyone may read, with no "
            "token: releases and results, never hosts, logs or secrets.",
        ),
    ] = None,
    forge_api: Annotated[
        str | None,
        typer.Option(
            help="The forge's API base URL, for pull requests' commit statuses "
            '("" goes back to the default).'
        ),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an app's settings."""
    if (repo, branch, poll, public_status, forge_api) == (None,) * 5:
        fail(
            "nothing to change: give --repo, --branch, --poll, --[no-]public-status or --forge-api",
            2,
        )
    if repo and re.match(r"^[./~]", repo) and Path(repo).expanduser().exists():
        repo = str(Path(repo).expanduser().resolve())
    body = {
        "repo": repo,
        "branch": branch,
        "poll_interval": poll,
        "public_status": public_status,
        "forge_api": forge_api,
    }
    updated = Client(server, token, ca).update_app(
        name, {k: v for k, v in body.items() if v is not None}
    )
    if as_json:
        print_json(wire(updated))
        return
    polling = f"every {updated.poll_interval}s" if updated.poll_interval else "off"
    public = "public status page /status/" + name if updated.public_status else "no public page"
    out.print(f"app {name}: {updated.repo}, branch {updated.branch}, polling {polling}, {public}")


@apps_cli.command("list")
def app_list(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List apps."""
    rows = Client(server, token, ca).apps()
    if as_json:
        print_json(wire(rows))
        return
    out.print(apps_table(rows))


@apps_cli.command("remove")
def app_remove(
    name: str,
    force: Annotated[
        bool,
        typer.Option(help="Even while it serves traffic or has queued work: its hosts stop it."),
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Remove an app with its runs, releases, deployments and secrets."""
    Client(server, token, ca).remove_app(name, force=force)
    out.print(f"app {name} removed")


@app.command("hook-script")
def hook_script(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Print a git post-receive hook that triggers runs from a bare repository."""
    sys.stdout.write(Client(server, token, ca).hook_script(app_name))


# -- hosts, agents and routers ----------------------------------------------------


@hosts_cli.command("add")
def host_add(
    name: str,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a host; prints a one-time enrolment token for its agent."""
    client = Client(server, token, ca)
    created = client.add_host(name)
    if as_json:
        print_json(wire(created))
        return
    out.print(f"[green]host {name} registered[/green]; start its agent with:")
    pin = (
        f" --server-fingerprint {created.server_fingerprint}" if created.server_fingerprint else ""
    )
    bare(
        f"  conveyor agent --server {client.server} --name {name} "
        f"--token {created.enrolment_token}{pin} --data /var/lib/conveyor-agent"
    )
    out.print("[dim]the token works once; the agent keeps its own credential after[/dim]")
    if pin:
        out.print(
            "[dim]--server-fingerprint pins the server's TLS certificate; to survive its "
            "renewal, give the agent --ca FILE (the CA that signed it) instead[/dim]"
        )


@hosts_cli.command("list")
def host_list(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List hosts with their state and what they run."""
    rows = Client(server, token, ca).hosts()
    if as_json:
        print_json(wire(rows))
        return
    out.print(hosts_table(rows))


@hosts_cli.command("remove")
def host_remove(
    name: str, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, ca: CaOpt = None
) -> None:
    """Revoke a host: its agent's credential stops working at once."""
    Client(server, token, ca).remove_host(name)
    out.print(f"host {name} revoked")


# -- secrets and tokens ------------------------------------------------------------


@tokens_cli.command("create")
def token_create(
    name: str,
    role: Annotated[
        str, typer.Option(help="viewer, deployer, admin, or runner (a `conveyor runner`).")
    ] = "viewer",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token; it is printed once."""
    created = Client(server, token, ca).create_token(name, role)
    if as_json:
        print_json(wire(created))
        return
    bare(f"token {created.id} ({created.role}): {created.token}")


@tokens_cli.command("list")
def token_list(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List API tokens."""
    rows = Client(server, token, ca).tokens()
    if as_json:
        print_json(wire(rows))
        return
    out.print(tokens_table(rows))


@tokens_cli.command("revoke")
def token_revoke(
    token_id: int, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, ca: CaOpt = None
) -> None:
    """Revoke an API token."""
    Client(server, token, ca).revoke_token(token_id)
    out.print(f"token {token_id} revoked")


# -- runs -----------------------------------------------------------------------


@app.command()
def run(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    sha: Annotated[
        str | None, typer.Option(help="Commit to run (default: the branch head).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Show the run, then its release's deployments up the promotion chain; exit 0 "
            "once the last environment serves it, 1 if the run or a deployment fails, is rolled "
            "back, cancelled or superseded. With --json, only the run's record on stdout.",
        ),
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a run for a commit: test, build, release; then the pipeline deploys it."""
    client = Client(server, token, ca)
    created = client.start_run(app_name, sha)
    if not follow:
        if as_json:
            print_json(wire(created))
        else:
            out.print(f"run {created.id} queued for {app_name}" + (f" at {sha}" if sha else ""))
        return
    console = err if as_json else out
    console.print(f"run {created.id} queued for {app_name}")
    state = follow_run(client, created.id, console)
    done = client.run(created.id)
    reached = False
    if state == "succeeded":
        try:
            reached = follow_chain(client, done, console)
        except KeyboardInterrupt:
            err.print("stopped following; the deployments go on (`conveyor status` shows them)")
            raise typer.Exit(130) from None
    if as_json:
        print_json(wire(done))
    raise typer.Exit(0 if reached else 1)


@app.command()
def logs(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The run's logs, step by step."""
    client = Client(server, token, ca)
    if follow and not as_json:
        state = follow_run(client, run_id, out)
        raise typer.Exit(0 if state == "succeeded" else 1)
    if follow:
        while client.run(run_id).state not in FINAL:
            import time

            time.sleep(0.5)
    found = client.run(run_id)
    chunks = {c.step: c.text for c in client.run_logs(run_id)}
    if as_json:
        run_data = wire(found)
        for step_data in run_data["steps"]:
            step_data["log"] = chunks.get(step_data["id"], "")
        print_json(run_data)
        return
    for step in found.steps:
        out.print(f"[bold]── {step_title(step)} · {step.state}[/bold]")
        text = chunks.get(step.id, "")
        if text:
            out.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
    out.print(f"run {run_id}: {found.state}" + (f" ({found.reason})" if found.reason else ""))
    for line in pull_request_lines(found):
        bare(line)


deploy.register(app)
controls.register(app)
status.register(app)
migrations.register(app)
