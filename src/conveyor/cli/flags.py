"""`conveyor flag list|show|on|off|rollout|target|token`: feature flags, one call each."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from conveyor.cli.client import DEFAULT_SERVER, CaOpt, Client, JsonOpt, ServerOpt, TokenOpt, fail
from conveyor.cli.deploy import AppArg, EnvArg
from conveyor.cli.render import bare, out, print_json, when
from conveyor.client import wire
from conveyor.config.durations import parse_duration
from conveyor.flags.definition import describe
from conveyor.protocol.flags import FlagChange, FlagConstraint, FlagDetail, GuardedRolloutStart

flags_cli = typer.Typer(
    help="Feature flags per app and environment: switched at runtime, never deployed.",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The flag.")]


def _said(detail: FlagDetail, as_json: bool) -> None:
    if as_json:
        print_json(wire(detail))
        return
    out.print(f"{detail.name} in {detail.environment} of {detail.app}: {describe(detail.state)}")


def _change(
    app: str,
    env: str,
    name: str,
    change: FlagChange,
    server: str,
    token: str | None,
    ca: str | None,
) -> FlagDetail:
    return Client(server, token, ca).change_flag(app, env, name, change)


@flags_cli.command("list")
def flag_list(
    app_name: AppArg,
    env: EnvArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every flag of an environment, with what it does now."""
    rows = Client(server, token, ca).flags(app_name, env)
    if as_json:
        print_json(wire(rows))
        return
    for row in rows:
        out.print(f"{row.name}  {describe(row.state)}")


@flags_cli.command("show")
def flag_show(
    app_name: AppArg,
    env: EnvArg,
    name: NameArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A flag and its history: who changed it, when, from what to what."""
    detail = Client(server, token, ca).flag(app_name, env, name)
    if as_json:
        print_json(wire(detail))
        return
    _said(detail, False)
    if detail.description:
        out.print(f"  {detail.description}")
    r = detail.rollout
    if r is not None:
        steps = ",".join(map(str, r.steps))
        out.print(
            f"  guarded rollout {r.state.replace('_', ' ')}: step {r.step + 1} of {len(r.steps)} "
            f"({r.steps[r.step]}%; steps {steps}%, {r.step_pause:g} s each)"
            + (f": {r.reason}" if r.reason else "")
        )
        if r.judgement is not None:
            out.print(f"  judge: {r.judgement.verdict}, {r.judgement.requests} requests on")
    for change in reversed(detail.history):
        before = describe(change.before) if change.before else "(created)"
        out.print(f"  {when(change.at)}  {change.by}: {before} -> {describe(change.after)}")
        for line in (change.note or "").splitlines():
            out.print(f"      {line}")


@flags_cli.command("on")
def flag_on(
    app_name: AppArg,
    env: EnvArg,
    name: NameArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn a flag on (for its rollout percentage and targeting)."""
    _said(_change(app_name, env, name, FlagChange(enabled=True), server, token, ca), as_json)


@flags_cli.command("off")
def flag_off(
    app_name: AppArg,
    env: EnvArg,
    name: NameArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn a flag off for everyone (the kill switch)."""
    _said(_change(app_name, env, name, FlagChange(enabled=False), server, token, ca), as_json)


@flags_cli.command("rollout")
def flag_rollout(
    app_name: AppArg,
    env: EnvArg,
    name: NameArg,
    percent: Annotated[
        int | None, typer.Argument(metavar="[PERCENT]", help="0 to 100 (or --steps).")
    ] = None,
    stickiness: Annotated[
        str | None,
        typer.Option(help="The context field users are hashed by (default: the user id)."),
    ] = None,
    steps: Annotated[
        str | None,
        typer.Option(
            help="A guarded rollout through these rising percentages, e.g. 5,25,50,100: "
            "each step judged (on against off), a regression turns the flag off."
        ),
    ] = None,
    step_pause: Annotated[
        str, typer.Option(help="How long each step of --steps lasts at least: 30s, 10m, 1h.")
    ] = "10m",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the share of users a flag is on for (the same users stay in as it grows), or
    raise it step by step under the judge's watch (--steps)."""
    client = Client(server, token, ca)
    if steps is not None:
        if percent is not None:
            fail("give PERCENT or --steps, not both", 2)
        if stickiness is not None:
            _change(app_name, env, name, FlagChange(stickiness=stickiness), server, token, ca)
        start = guarded_start(steps, step_pause)
        _said(client.start_guarded_rollout(app_name, env, name, start), as_json)
        return
    if percent is None:
        fail("give the rollout PERCENT (0-100) or --steps 5,25,50,100", 2)
    if not 0 <= percent <= 100:
        fail(f"rollout percentage {percent} is outside 0-100", 2)
    change = FlagChange(rollout=percent, stickiness=stickiness)
    _said(_change(app_name, env, name, change, server, token, ca), as_json)


def guarded_start(steps: str, step_pause: str) -> GuardedRolloutStart:
    """`--steps 5,25,50,100 --step-pause 10m` as the API's body; exits naming a bad one."""
    try:
        pause = parse_duration(step_pause)
    except ValueError as exc:
        fail(f"--step-pause {step_pause!r}: {exc}", 2)
    try:
        percents = [int(p) for p in steps.split(",") if p.strip()]
    except ValueError:
        fail(f"--steps {steps!r}: expected rising percentages like 5,25,50,100", 2)
    try:
        return GuardedRolloutStart(steps=percents, step_pause=pause)
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]) for e in exc.errors()), 2)


def parse_where(text: str) -> FlagConstraint:
    """`FIELD [not] OPERATOR VALUE[,VALUE…]`, e.g. `plan in pro,team`, `version semver_gt 2.0.0`."""
    words = text.split(maxsplit=3)
    inverted = len(words) > 2 and words[1].lower() == "not"
    if inverted:
        words = [words[0], *" ".join(words[2:]).split(maxsplit=1)]
    else:
        words = text.split(maxsplit=2)
    if len(words) != 3:
        fail(f"--where {text!r}: expected FIELD OPERATOR VALUES, e.g. 'plan in pro,team'", 2)
    field, operator, values = words
    return FlagConstraint.model_construct(
        context_name=field,
        operator=operator.upper(),
        values=[v.strip() for v in values.split(",") if v.strip()],
        inverted=inverted,
        case_insensitive=False,
    )


@flags_cli.command("target")
def flag_target(
    app_name: AppArg,
    env: EnvArg,
    name: NameArg,
    users: Annotated[
        str | None, typer.Option(help="User ids the flag is always on for: a,b,c ('' for none).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="A condition the rollout's users must meet: FIELD [not] OPERATOR VALUES, "
            "e.g. 'plan in pro,team', 'version semver_gte 2.1.0' (repeat for more).",
        ),
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove every condition.")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set who a flag is for: user ids always, and conditions on context fields."""
    if users is None and where is None and not clear:
        fail("nothing to change: give --users, --where or --clear", 2)
    user_ids = None if users is None else [u.strip() for u in users.split(",") if u.strip()]
    constraints = [parse_where(w) for w in where] if where else ([] if clear else None)
    # built unchecked: the server names what is wrong (an unknown operator, say)
    change = FlagChange.model_construct(user_ids=user_ids, constraints=constraints)
    detail = _change(app_name, env, name, change, server, token, ca)
    _said(detail, as_json)


@flags_cli.command("token")
def flag_token(
    app_name: AppArg,
    env: EnvArg,
    name: Annotated[str, typer.Option(help="What the token is for.")] = "sdk",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """A client token for the Unleash SDKs of this app and environment (shown once)."""
    created = Client(server, token, ca).create_flag_token(app_name, env, name)
    bare(created.token)
