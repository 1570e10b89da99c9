"""Desired state per host: written to the database first, then served to its agent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence

from sqlalchemy.orm import Session

from conveyor.config.migrations import pg_options
from conveyor.config.tls import Tls
from conveyor.deploy.certificates import challenges_for, stored_for
from conveyor.deploy.claims import domain_clash, release_claims
from conveyor.deploy.configs import release_config
from conveyor.deploy.contracting import CONTRACT_PREFIX
from conveyor.deploy.flagstate import host_flags
from conveyor.protocol import (
    ChecksRequest,
    DesiredApp,
    DesiredRelease,
    DesiredState,
    InstanceLimits,
    MigrateRequest,
    ReleaseWeight,
    ServiceSpec,
    TlsSpec,
)
from conveyor.protocol.desired import HostFlags
from conveyor.store import changes
from conveyor.store.models import App, Host, HostApp, Release
from conveyor.store.secrets import secret_values
from conveyor.threads import call_on_loop


class DesiredStateError(Exception):
    """The requested state cannot be served (unknown release, no service section…)."""


class Notifier:
    """Wakes the long-polls of agents whose desired state changed (in this process)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        # the other servers on the same database (store/cluster.py Cluster.publish)
        self.publish: Callable[[Collection[str]], None] | None = None

    def bind(self) -> None:
        """Remember the server's loop: `changed` may then be called from any thread."""
        self._loop = asyncio.get_running_loop()

    def changed(self, host: str) -> None:
        self.changed_many([host])

    def changed_many(self, hosts: Collection[str]) -> None:
        """These hosts' desired state changed (one commit): wake their polls, here and on
        the other servers (one wake-up for them all)."""
        self.woken(hosts)
        if self.publish is not None:
            self.publish(hosts)

    def woken(self, hosts: Collection[str] | None) -> None:
        """Wake the polls of these hosts in this process (None: every poll)."""

        def wake() -> None:
            for host in list(self._events) if hosts is None else hosts:
                self._events[host].set()

        call_on_loop(self._loop, wake)

    def close(self) -> None:
        """End every long-poll now (the server is stopping): agents simply poll again."""
        self.closed = True
        for event in self._events.values():
            event.set()

    async def wait(self, host: str, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        if self.closed:
            return
        event = self._events[host]
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout)
        except TimeoutError:
            return
        finally:
            event.clear()


def service_spec(session: Session, release: Release, environment: str | None) -> ServiceSpec:
    """How the release runs in this environment: its env over the service's, its secrets."""
    if not release.config:
        raise DesiredStateError(f"release {release.id} has no recorded conveyor.yml")
    config = release_config(release.config)
    service = config.service
    if service is None:
        raise DesiredStateError(
            f"release {release.id}: its conveyor.yml has no service section, so it cannot run"
        )
    secrets = secret_values(session, release.app, environment)
    routing = config.routing(environment)
    tls_secrets = (
        [n for n in (routing.tls.cert_secret, routing.tls.key_secret) if n] if routing.tls else []
    )
    missing = [name for name in [*service.secret_names, *tls_secrets] if name not in secrets]
    if missing:
        where = f" for environment {environment}" if environment else ""
        raise DesiredStateError(
            f"release {release.id} needs secrets not set on the server{where}: "
            f"{', '.join(missing)} (conveyor secret set {release.app.name} NAME"
            f"{f' --env {environment}' if environment else ''}; a secret from a command "
            "gets its value when a deployment runs it)"
        )
    env = dict(service.env)
    if environment and environment in config.environments:
        env |= config.environments[environment].env
    env |= {name: secrets[name] for name in service.secret_names}
    return ServiceSpec(
        start=service.start,
        port=service.port,
        health_path=service.health.path,
        health_interval=service.health.interval,
        health_timeout=service.health.timeout,
        drain=service.drain,
        keep_warm=service.keep_warm,
        keep_warm_releases=service.keep_warm_releases,
        env=env,
        install_hook=config.hooks.install,
        user=service.user,
        limits=InstanceLimits.model_validate(service.limits.model_dump()),
        domains=list(routing.domains),
        path_prefix=routing.path_prefix,
        strip_prefix=routing.strip_prefix,
        tls=tls_spec(routing.tls, routing.redirect_http, secrets, routing.domains),
    )


def tls_spec(
    tls: Tls | None,
    redirect_http: bool,
    secrets: Mapping[str, str],
    domains: Sequence[str] = (),
) -> TlsSpec | None:
    """`tls:` as the host gets it: file paths, the secrets' PEM values, or ACME's settings
    with the certificate the server ordered for the environment's domains, once it has one
    (deploy/certificates.py)."""
    if tls is None:
        return None
    cert_pem = secrets[tls.cert_secret] if tls.cert_secret else None
    key_pem = secrets[tls.key_secret] if tls.key_secret else None
    ordered = stored_for(secrets, domains, tls.acme.directory) if tls.acme else None
    if ordered is not None:
        cert_pem, key_pem = ordered.cert, ordered.key
    return TlsSpec(
        cert_file=tls.cert,
        key_file=tls.key,
        cert_pem=cert_pem,
        key_pem=key_pem,
        acme_directory=tls.acme.directory if tls.acme else None,
        acme_email=tls.acme.email if tls.acme else None,
        acme_error=ordered.error if ordered is not None else None,
        redirect_http=redirect_http,
    )


def migrate_request(release: Release, migration: str | None) -> MigrateRequest | None:
    """The release's expand migration (migrations.expand or hooks.migrate), or its contract
    for a contract id, to run once under this id, its PostgreSQL sessions limited by the
    timeouts (None: nothing to run)."""
    if migration is None or not release.config:
        return None
    config = release_config(release.config)
    limits = config.migrations
    command = config.expand_command
    if migration.startswith(CONTRACT_PREFIX):
        command = contract_command(limits.contract, limits.backup)
    if not command:
        return None
    options = pg_options(limits.lock_timeout, limits.statement_timeout)
    return MigrateRequest(id=migration, command=command, pg_options=options, timeout=limits.timeout)


def contract_command(contract: str | None, backup: str | None) -> str | None:
    """migrations.contract, after migrations.backup when there is one: a failed backup
    stops it (the agent runs it with bash; a subshell: its `exit` is its own)."""
    if not contract or not backup:
        return contract
    return (
        f'( {backup}\n) || {{ code=$?; echo "conveyor: migrations.backup failed (exit $code); '
        f'the contract did not run" >&2; exit $code; }}\n{contract}'
    )


def host_environment(release: Release, host: str) -> str | None:
    """The environment of the release's conveyor.yml that lists this host, if one does."""
    if not release.config:
        return None
    config = release_config(release.config)
    for name, env in config.environments.items():
        if isinstance(env.hosts, list) and host in env.hosts:
            return name
    return None


def set_host_app(
    session: Session,
    host: Host,
    app: App,
    releases: list[ReleaseWeight],
    sticky: bool,
    environment: str | None = None,
) -> None:
    """Record what one host should run for one app; bumps the host's generation.

    `environment` (whose env and secrets the releases get): a deployment's; else the
    one the host had, else the one whose hosts list names it in the first release.
    """
    row = next((ha for ha in host.apps if ha.app_id == app.id), None)
    if environment is None and row is not None:
        environment = row.environment
    if environment is None and releases:
        first = session.get(Release, releases[0].release)
        environment = host_environment(first, host.name) if first is not None else None
    seen: set[str] = set()
    for item in releases:
        if item.release in seen:
            raise DesiredStateError(f"release {item.release} is listed twice")
        seen.add(item.release)
        release = session.get(Release, item.release)
        if release is None or release.app_id != app.id:
            raise DesiredStateError(f"unknown release {item.release!r} of app {app.name!r}")
        # refuse what an agent could not run, before writing anything
        service_spec(session, release, environment)
    for item in releases:
        release = session.get_one(Release, item.release)
        clash = domain_clash(session, app, release_claims(release, environment), [host.name])
        if clash is not None:
            raise DesiredStateError(clash)
    if releases and sum(r.weight for r in releases) == 0:
        raise DesiredStateError("at least one release needs a weight above 0")
    payload = json.dumps([r.model_dump() for r in releases])
    if row is None:
        host.apps.append(
            HostApp(app_id=app.id, releases=payload, sticky=sticky, environment=environment)
        )
    else:
        row.releases = payload
        row.sticky = sticky
        row.environment = environment
    host.generation += 1


def host_app_releases(row: HostApp) -> list[ReleaseWeight]:
    return [ReleaseWeight.model_validate(r) for r in json.loads(row.releases)]


# A deployment step for a thousand hosts wakes a thousand long-polls at once, each for
# the same releases: their part of the answer (service, secrets, migration) is made once
# and served for SERVED_FOR seconds. The key holds what the host's row says (releases,
# weights, environment) and this process's writes of secrets (a secret set here is in the
# next answer; one set through another server sharing the database, within SERVED_FOR);
# flags are read for each answer.
SERVED_FOR = 1.0
_served: dict[tuple[int, str, str, int], tuple[float, list[DesiredRelease]]] = {}
_served_lock = threading.Lock()


# one read's flags by (app id, environment): the hosts of one batch share them
FlagsRead = dict[tuple[int, str | None], HostFlags | None]


def desired_state(
    session: Session, host: Host, flags_read: FlagsRead | None = None
) -> DesiredState:
    """What the host's agent should run now; `flags_read`: the flags this transaction
    read already for other hosts (desired_states), filled as they are read."""
    apps = []
    for row in host.apps:
        releases = _desired_releases(session, row, host.name)
        if flags_read is None:
            flags = host_flags(session, row.app, row.environment)
        else:
            key = (row.app_id, row.environment)
            if key not in flags_read:
                flags_read[key] = host_flags(session, row.app, row.environment)
            flags = flags_read[key]
        apps.append(DesiredApp(app=row.app.name, releases=releases, sticky=row.sticky, flags=flags))
    checks = [ChecksRequest.model_validate(c) for c in json.loads(host.checks or "[]")]
    return DesiredState(
        host=host.name,
        generation=host.generation,
        apps=apps,
        checks=checks,
        challenges=challenges_for(session, host.name),
    )


def _desired_releases(session: Session, row: HostApp, host_name: str) -> list[DesiredRelease]:
    secrets = changes.generation("secrets") + changes.generation("resolved_secrets")
    key = (row.app_id, row.releases, row.environment or f"host {host_name}", secrets)
    now = time.monotonic()
    found = _served.get(key)
    if found is not None and now - found[0] < SERVED_FOR:
        return found[1]
    releases = []
    for item in host_app_releases(row):
        release = session.get(Release, item.release)
        if release is None:
            continue
        releases.append(
            DesiredRelease(
                release=release.id,
                sha256=release.sha256,
                artifact=f"/api/agent/artifacts/{release.id}",
                weight=item.weight,
                # a row written before 0008 has no environment: its conveyor.yml's
                service=service_spec(
                    session, release, row.environment or host_environment(release, host_name)
                ),
                migrate=migrate_request(release, item.migrate),
            )
        )
    with _served_lock:
        if len(_served) > 1000:
            _served.clear()
        _served[key] = (now, releases)
    return releases
