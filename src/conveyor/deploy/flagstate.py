"""An app's flags in one environment as the SDKs and the routers read them.

What the app's newest release's conveyor.yml declares, merged with what the store
holds (store.flags.catalog), as one Unleash document; and for the hosts, that document
with the request field the routers read the user from (`flags.stickiness`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.config.models import Config
from conveyor.deploy.gates import release_config
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.protocol.desired import HostFlags
from conveyor.protocol.flags import FlagVariant
from conveyor.protocol.unleash import ClientFeatures
from conveyor.store import flags as store
from conveyor.store.models import App, Host, HostApp, Release


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


# (app id, environment) -> (what it was made from, the hosts' document): the hosts of an
# environment woken by one flag change (a kill switch) share one document, not one each
_documents: dict[tuple[int, str], tuple[tuple[str, int | None], ClientFeatures]] = {}


def host_flags(session: Session, app: App, environment: str | None) -> HostFlags | None:
    """What a host's router evaluates for the app, if its conveyor.yml asks for it."""
    release = newest_release(session, app)
    config = release_config(release) if release is not None and release.config else None
    if environment is None or release is None or config is None:
        return None
    if config.flags.stickiness is None:
        return None
    # every change of a flag adds a line of history: the newest line and the newest
    # release (its declared flags) say whether the document is still the one made before
    made_from = (release.id, store.last_change(session, app.id, environment))
    key = (app.id, environment)
    cached = _documents.get(key)
    if cached is not None and cached[0] == made_from:
        made = cached[1]
    else:
        made = document(session, app, environment, config)
        if len(_documents) > 1000:
            _documents.clear()
        _documents[key] = (made_from, made)
    return HostFlags(
        stickiness=config.flags.stickiness,
        document=made,
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
