"""`conveyor promote / pause / resume`: a canary's step in a person's hands, one call each."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt
from conveyor.cli.deploy import AppArg, EnvArg
from conveyor.cli.render import out, print_json
from conveyor.client import wire
from conveyor.protocol import DeploymentOut


def promote(
    app_name: AppArg,
    env: EnvArg,
    full: Annotated[
        bool,
        typer.Option("--full", help="Go to 100% now: the canary's later steps are skipped."),
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the running canary step now as passed: the next step (or 100% with --full) starts.

    The watch window after 100% (`monitor:`) still runs. Recorded with your token's name.
    """
    query = "?full=true" if full else ""
    d = Client(server, token, ca).control(app_name, env, "promote", query)
    _said(d, as_json)


def pause(
    app_name: AppArg,
    env: EnvArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold the running canary step until `conveyor resume` or `conveyor promote`.

    The judge still watches while paused, and a failure still rolls back.
    """
    d = Client(server, token, ca).control(app_name, env, "pause")
    _said(d, as_json)


def resume(
    app_name: AppArg,
    env: EnvArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Let a paused canary step go on with the time it had left."""
    d = Client(server, token, ca).control(app_name, env, "resume")
    _said(d, as_json)


def _said(d: DeploymentOut, as_json: bool) -> None:
    if as_json:
        print_json(wire(d))
        return
    controlled = [(s, s.control.actions[-1]) for s in d.steps if s.control and s.control.actions]
    if not controlled:
        out.print(f"deployment #{d.id} to {d.environment}: {d.state}", soft_wrap=True)
        return
    step, last = max(controlled, key=lambda pair: pair[1].at)
    what = {
        "promote": "promoted: the step ends as passed",
        "promote-full": "promoted to 100%: the canary's later steps are skipped",
        "pause": "paused: the judge still watches and rolls back on a failure",
        "resume": "resumed with the time the step had left",
    }[last.action]
    left = f" ({step.left:.0f} s left)" if last.action == "resume" and step.left else ""
    out.print(
        f"deployment #{d.id} to {d.environment}, step {step.name!r}: {what}{left}; by {last.by}",
        soft_wrap=True,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(promote)
    app.command()(pause)
    app.command()(resume)
