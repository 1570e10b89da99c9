"""Feature flags per app and environment: list and read (viewer), create and change
(deployer), each change recorded with who, when, before and after; SDK client tokens.

Flags change at runtime, without a deployment. The app's environments and declared
flags are those of its newest release's conveyor.yml.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.orm import Session

from conveyor.deploy.flagrollouts import begin, cancel
from conveyor.deploy.flagstate import declared, hosts_woken, newest_config
from conveyor.flags.definition import changed
from conveyor.protocol.flags import (
    FlagChange,
    FlagCreate,
    FlagDetail,
    FlagOut,
    FlagState,
    FlagTokenCreate,
    FlagTokenCreated,
    GuardedRolloutStart,
)
from conveyor.server.api.deployments import _check_environment
from conveyor.server.auth import Deployer, Viewer, hash_token, new_token
from conveyor.server.deps import AppName, EnvName, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.store import flags as store
from conveyor.store.models import App, FlagToken

router = APIRouter(prefix="/api/apps/{name}/environments/{env}", tags=["flags"])

FLAGS = "/flags"
FLAG = "/flags/{flag}"


def entries(session: Session, name: str, env: str) -> tuple[App, list[store.Entry]]:
    app = get_app_or_404(session, name)
    _check_environment(app, env, session)
    found = store.catalog(
        declared(newest_config(session, app)), store.rows_of(session, app.id, env)
    )
    return app, found


def _entry(session: Session, name: str, env: str, flag: str) -> tuple[App, store.Entry]:
    app, found = entries(session, name, env)
    for entry in found:
        if entry.name == flag:
            return app, entry
    known = ", ".join(e.name for e in found) or "none"
    raise HTTPException(
        404,
        f"unknown flag {flag!r} in {env} of {name} (it has: {known}); declare it in "
        "conveyor.yml (flags.declare) or create it (POST .../flags)",
    )


def _out(app: App, env: str, entry: store.Entry) -> FlagOut:
    return FlagOut(
        app=app.name,
        environment=env,
        name=entry.name,
        description=entry.description,
        declared=entry.declared,
        state=entry.state,
        updated_at=entry.row.updated_at if entry.row else None,
        updated_by=entry.row.updated_by if entry.row else None,
    )


def _commit_and_wake(session: Session, request: Request, app: App, env: str) -> None:
    """Commit a change; the hosts serving the environment get the new flags (long-poll)."""
    hosts = hosts_woken(session, app, env)
    session.commit()
    for host in hosts:
        request.app.state.notifier.changed(host)


def _detail(app: App, env: str, entry: store.Entry) -> FlagDetail:
    last = entry.row.rollouts[-1] if entry.row is not None and entry.row.rollouts else None
    return FlagDetail(
        **_out(app, env, entry).model_dump(),
        history=store.history(entry.row),
        rollout=store.rollout_out(last),
    )


@router.get(FLAGS, responses=responses(404))
def list_flags(name: AppName, env: EnvName, _: Viewer, session: SessionDep) -> list[FlagOut]:
    """Every flag of an environment: declared in conveyor.yml, created, or both."""
    app, found = entries(session, name, env)
    return [_out(app, env, e) for e in found]


@router.get(FLAG, responses=responses(404))
def show_flag(name: AppName, env: EnvName, flag: str, _: Viewer, session: SessionDep) -> FlagDetail:
    """One flag with its history of changes (who, when, before, after)."""
    app, entry = _entry(session, name, env, flag)
    return _detail(app, env, entry)


@router.post(FLAGS, status_code=201, responses=responses(404, 409))
def create_flag(
    name: AppName,
    env: EnvName,
    body: FlagCreate,
    request: Request,
    caller: Deployer,
    session: SessionDep,
) -> FlagDetail:
    """A new flag in one environment, off (a flag conveyor.yml declares exists already)."""
    app, found = entries(session, name, env)
    if any(e.name == body.name for e in found):
        raise HTTPException(409, f"flag {body.name!r} already exists in {env} of {name}")
    state = FlagState(variants=body.variants)
    entry = store.Entry(body.name, body.description, False, state, None)
    row = store.save(session, app.id, env, entry, state, caller.name, created=True)
    _commit_and_wake(session, request, app, env)
    return _detail(app, env, store.Entry(body.name, body.description, False, state, row))


@router.patch(FLAG, responses=responses(404))
def change_flag(
    name: AppName,
    env: EnvName,
    flag: str,
    body: FlagChange,
    request: Request,
    caller: Deployer,
    session: SessionDep,
) -> FlagDetail:
    """Change a flag now (on/off, rollout, targeting, variants): only the fields given."""
    app, entry = _entry(session, name, env, flag)
    after = changed(entry.state, body)
    if after != entry.state:
        # a person's change ends the flag's guarded rollout under way: they took over
        cancel(session, entry.row, f"{caller.name} changed the flag")
        row = store.save(session, app.id, env, entry, after, caller.name)
        _commit_and_wake(session, request, app, env)
        entry = store.Entry(entry.name, entry.description, entry.declared, after, row)
    return _detail(app, env, entry)


@router.post(FLAG + "/rollout", status_code=201, responses=responses(404))
def start_guarded_rollout(
    name: AppName,
    env: EnvName,
    flag: str,
    body: GuardedRolloutStart,
    request: Request,
    caller: Deployer,
    session: SessionDep,
) -> FlagDetail:
    """Raise a flag's percentage step by step, each step judged (on against off by the
    canary judge); a regression turns the flag off everywhere."""
    app, entry = _entry(session, name, env, flag)
    begin(session, app, env, entry, body, caller.name)
    _commit_and_wake(session, request, app, env)
    request.app.state.flag_rollouts.wake()
    session.expire_all()
    return _entry_detail(session, app, env, flag)


def _entry_detail(session: Session, app: App, env: str, flag: str) -> FlagDetail:
    _, entry = _entry(session, app.name, env, flag)
    return _detail(app, env, entry)


@router.post("/flag-tokens", status_code=201, responses=responses(404))
def create_flag_token(
    name: AppName, env: EnvName, body: FlagTokenCreate, _: Deployer, session: SessionDep
) -> FlagTokenCreated:
    """A client token for the Unleash SDKs: reads this app and environment's flags only."""
    app = get_app_or_404(session, name)
    _check_environment(app, env, session)
    value = new_token()
    token = FlagToken(app_id=app.id, environment=env, name=body.name, token_hash=hash_token(value))
    session.add(token)
    session.commit()
    return FlagTokenCreated(
        id=token.id, name=token.name, app=app.name, environment=env, token=value
    )
