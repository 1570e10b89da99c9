"""Host names on a host's shared port: a deployment that would take another app's is refused.

Issue 14 point 1: two apps may not claim the same domain (and path prefix) on one host.
The decision is `conveyor.hostroutes.clashes`; this module gathers, from the database,
what each other app on the host claims (its current releases' conveyor.yml, in the
environment the host serves it in), before anything is written.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy.configs import release_config
from conveyor.hostroutes import Claim, claims, clashes
from conveyor.store.models import App, Host, Release


def release_claims(release: Release, environment: str | None) -> list[Claim]:
    if not release.config:
        return []
    routing = release_config(release.config).routing(environment)
    return claims(routing.domains, routing.path_prefix or None)


def claims_on_host(session: Session, host: Host, but: int) -> dict[str, list[Claim]]:
    """What every app but `but` (an app id) claims on the host, by app name."""
    out: dict[str, list[Claim]] = {}
    for row in host.apps:
        if row.app_id == but:
            continue
        found: list[Claim] = []
        for item in json.loads(row.releases):
            release = session.get(Release, item["release"])
            if release is not None:
                found += release_claims(release, row.environment)
        if found:
            out[row.app.name] = found
    return out


def domain_clash(session: Session, app: App, mine: list[Claim], hosts: list[str]) -> str | None:
    """The refusal when one of `hosts` already serves one of `mine` for another app."""
    if not mine:
        return None
    for host in session.scalars(select(Host).where(Host.name.in_(hosts)).order_by(Host.name)):
        clash = clashes(app.name, mine, claims_on_host(session, host, app.id))
        if clash is not None:
            return f"host {host.name}: {clash}"
    return None
