"""An app's flags in one environment as the SDKs and the routers read them.

What the app's newest release's conveyor.yml declares, merged with what the store
holds (store.flags.catalog), as one Unleash document; and for the hosts, that document
with the request field the routers read the user from (`flags.stickiness`).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.config.models import Config
from conveyor.deploy.gates import release_config
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.protocol.desired import HostFlags
from conveyor.protocol.flags import FlagVariant
from conveyor.protocol.unleash import ClientFeatures
from conveyor.store import flags as store
from conveyor.store.models import App, Flag, FlagChange, FlagRollout, Host, HostApp, Release


def newest_release(session: Session, app: App) -> Release | None:
    return session.scalar(
        select(Release).where(Release.app_id == app.id).order_by(Release.created_at.desc()).limit(1)
    )


def newest_config(session: Session, app: App) -> Config | None:
    release = newest_release(session, app)
    if release is None or not release.config:
        return None
    return release_config(release)


def declared(config: Config | None) -> list[store.Declared]:
    """The flags a conveyor.yml declares."""
    if config is None:
        return []
    return [
        store.Declared(
            f.name,
            f.description,
            [FlagVariant(name=v.name, weight=v.weight, payload=v.payload) for v in f.variants],
        )
        for f in config.flags.declare
    ]


def document(
    session: Session, app: App, environment: str, config: Config | None = None
) -> ClientFeatures:
    """`/api/client/features` of one app and environment (`config`: the app's newest
    release's conveyor.yml, if the caller read it already)."""
    rows = store.rows_of(session, app.id, environment)
    entries = store.catalog(declared(config or newest_config(session, app)), rows)
    return to_document(NamedFlag(e.name, e.description, e.state) for e in entries)


# What the hosts' flags of an app in an environment are made of, read in one statement:
# the newest release (its conveyor.yml declares flags and says `stickiness`), the newest
# line of the flags' history (every change adds one) and the running guarded rollouts (a
# new one has a higher id than any before; one that ends lowers their count).
MadeFrom = tuple[str | None, int | None, int, int | None]

# (app id, environment) -> (what they were made from, the hosts' flags): the hosts of an
# environment woken by one flag change (a kill switch) share them, read once
_served: dict[tuple[int, str], tuple[MadeFrom, HostFlags | None]] = {}


def made_from(session: Session, app_id: int, environment: str) -> MadeFrom:
    newest = (
        select(Release.id)
        .where(Release.app_id == app_id)
        .order_by(Release.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    of_env = (Flag.app_id == app_id, Flag.environment == environment)
    last_change = select(func.max(FlagChange.id)).join(Flag).where(*of_env).scalar_subquery()
    running = (FlagRollout.state == store.RUNNING, *of_env)
    count = select(func.count(FlagRollout.id)).join(Flag).where(*running).scalar_subquery()
    top = select(func.max(FlagRollout.id)).join(Flag).where(*running).scalar_subquery()
    row = session.execute(select(newest, last_change, count, top)).one()
    return (row[0], row[1], int(row[2] or 0), row[3])


def host_flags(session: Session, app: App, environment: str | None) -> HostFlags | None:
    """What a host's router evaluates for the app, if its conveyor.yml asks for it."""
    if environment is None:
        return None
    made = made_from(session, app.id, environment)
    key = (app.id, environment)
    cached = _served.get(key)
    if cached is not None and cached[0] == made:
        return cached[1]
    flags = _host_flags(session, app, environment)
    if len(_served) > 1000:
        _served.clear()
    _served[key] = (made, flags)
    return flags


def _host_flags(session: Session, app: App, environment: str) -> HostFlags | None:
    config = newest_config(session, app)
    if config is None or config.flags.stickiness is None:
        return None
    return HostFlags(
        stickiness=config.flags.stickiness,
        document=document(session, app, environment, config),
        guarded=store.guarded_names(session, app.id, environment),
    )


def hosts_serving(session: Session, app: App, environment: str) -> list[Host]:
    """The hosts whose desired state carries the app's flags of this environment."""
    return list(
        session.scalars(
            select(Host)
            .join(HostApp)
            .where(HostApp.app_id == app.id, HostApp.environment == environment)
            .order_by(Host.name)
        ).all()
    )


def hosts_woken(session: Session, app: App, environment: str) -> list[str]:
    """Before committing a flag change: the hosts to wake once it is committed (their
    desired state's generation is raised in the same transaction)."""
    hosts = hosts_serving(session, app, environment)
    for host in hosts:
        host.generation += 1
    return [h.name for h in hosts]
