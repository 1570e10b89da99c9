"""`conveyor secret`: an app's secrets, per environment, sealed at rest on the server."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt, fail
from conveyor.cli.render import out, print_json
from conveyor.client import wire

secrets_cli = typer.Typer(
    help="Secrets handed to steps and instances: per environment, sealed at rest, masked in logs.",
    no_args_is_help=True,
)

EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        help="The environment this value is for (default: every environment; "
        "an environment's own value wins).",
    ),
]


@secrets_cli.command("set")
def secret_set(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    name: str,
    value: Annotated[
        str | None,
        typer.Argument(help="The value (default: read from stdin, which keeps it out of ps)."),
    ] = None,
    env: EnvOpt = None,
    command: Annotated[
        str | None,
        typer.Option(
            help="A command the server runs at each deployment instead (sh -c, 30 s, "
            '64 KiB); its output is the value, e.g. "vault kv get -field=url secret/shop".',
        ),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Set a secret of an app, sealed at rest (value from stdin, the argument or a command)."""
    if command is not None and value is not None:
        fail("give a value or --command, not both", 2)
    if command is None:
        value = value if value is not None else sys.stdin.read().rstrip("\n")
    Client(server, token, ca).set_secret(app_name, name, value, environment=env, command=command)
    scope = f"environment {env}" if env else "every environment"
    out.print(f"secret {name} of {app_name} set for {scope}")


@secrets_cli.command("list")
def secret_list(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List an app's secrets: names and scopes, never values."""
    rows = Client(server, token, ca).secrets(app_name)
    if as_json:
        print_json(wire(rows))
        return
    for row in rows:
        scope = row.environment or "(every environment)"
        source = "  from a command" if row.kind == "command" else ""
        out.print(f"{row.name}  {scope}{source}")


@secrets_cli.command("delete")
def secret_delete(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    name: str,
    env: EnvOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Delete a secret's value for one environment (--env) or its every-environment value."""
    Client(server, token, ca).delete_secret(app_name, name, environment=env)
    scope = f"environment {env}" if env else "every environment"
    out.print(f"secret {name} of {app_name} deleted for {scope}")


@secrets_cli.command("rotate-key")
def secret_rotate_key(
    server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = None, ca: CaOpt = None
) -> None:
    """Seal every secret again with a new key in the server's key file; the old key goes."""
    rotated = Client(server, token, ca).rotate_key()
    out.print(f"key rotated: {rotated.resealed} value(s) sealed again with the new key")
