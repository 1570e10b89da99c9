"""The agent's reconciler: converge this host toward its desired state, one tick at a time.

Per app: every desired release is installed, started and health-checked in the
background (bringup.py); the router gets the desired weights only once every release
that should take traffic is healthy (traffic.py: so a release that never gets healthy
changes nothing users see); a release no longer desired is drained, kept warm for
`keep_warm` (a rollback to it is then a weight switch), then stopped; only the last
`keep_warm_releases` previous releases (the ones current most recently) are kept
warm, the others stop once drained (see warmth.py). The moves between phases are
decided in lifecycle.py; this module does what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import conveyor
from conveyor.agent.acme import AcmeCertificates
from conveyor.agent.answers import ChallengeAnswers
from conveyor.agent.bringup import BringUp
from conveyor.agent.certstore import CertError, CertStore
from conveyor.agent.infrachecks import InfraChecks
from conveyor.agent.installer import Installer
from conveyor.agent.lifecycle import BRINGING_UP, Phase, Retire, Retiring, Wanted, retire, want
from conveyor.agent.link import ServerLink
from conveyor.agent.migrations import Migrations
from conveyor.agent.records import agent_sealer, atomic_write
from conveyor.agent.report import converged, observed_apps
from conveyor.agent.routing.spec import Router, RouterError, RouterMetrics, RouteSpec
from conveyor.agent.runtime import ReleaseRuntime
from conveyor.agent.supervisor import Supervisor
from conveyor.agent.traffic import Hold, Release, plan_route
from conveyor.agent.warmth import Retired, stay_warm
from conveyor.protocol import (
    DesiredApp,
    DesiredRelease,
    DesiredState,
    MigrationResult,
    ObservedState,
    ServiceSpec,
    TlsSpec,
)
from conveyor.sealing import InvalidToken, KeyFileError

__all__ = ["DEFAULT_KEEP_WARM", "DEFAULT_KEEP_WARM_RELEASES", "Reconciler", "ReleaseRuntime"]

log = logging.getLogger("conveyor.agent")

DEFAULT_KEEP_WARM = 600.0
DEFAULT_KEEP_WARM_RELEASES = 1

# the phases from which a desired release may be healthy this tick, then due a migration
_MAY_MIGRATE = frozenset({Phase.HEALTHY, Phase.DRAINING, Phase.WARM})


class Reconciler:
    def __init__(
        self,
        *,
        data: Path,
        name: str,
        link: ServerLink,
        router: Router,
        installer: Installer,
        supervisor: Supervisor,
        bind: str,
        http_port: int = 80,
        https_port: int = 443,
        acme_ca: str | None = None,
    ) -> None:
        self.data = data
        self.name = name
        self.link = link
        self.router = router
        self.installer = installer
        self.supervisor = supervisor
        self.migrations = Migrations(installer)
        self.answers = ChallengeAnswers(
            lambda answers: router.challenges(bind, http_port, answers), self._changed
        )
        self.acme = AcmeCertificates(data, self.answers.from_own_order, verify=acme_ca or True)
        self.certs = CertStore(data, https_port, acme_pair=self.acme.pair)
        self.infra = InfraChecks(installer.shared_dir, self._changed)
        self.bring_up = BringUp(
            data=data,
            link=link,
            installer=installer,
            supervisor=supervisor,
            migrations=self.migrations,
            changed=self._changed,
            tls_ready=self._tls_ready,
        )
        self.bind = bind
        self.http_port = http_port
        self.https_port = https_port
        self.desired: DesiredState | None = None
        self.runtimes: dict[tuple[str, str], ReleaseRuntime] = {}
        self.applied: dict[str, RouteSpec] = {}
        self.app_errors: dict[str, str | None] = {}
        self.routed: dict[str, bool] = {}
        self.keep_warm: dict[str, float] = {}
        self.keep_warm_releases: dict[str, int] = {}
        self._prune_due = True
        self.errors: list[str] = []
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        self.metrics: RouterMetrics | None = None
        self._desired_path = data / "desired.json"
        self._routes_path = data / "routes.json"

    # -- durable local copies, so a restart without the server still knows ----

    def load_local(self) -> None:
        if self._desired_path.exists():
            text = self._desired_path.read_text()
            try:
                if not text.startswith("{"):  # sealed (an older agent wrote plain JSON)
                    text = agent_sealer(self._desired_path.parent).open(text)
                self.desired = DesiredState.model_validate_json(text)
            except (InvalidToken, KeyFileError) as exc:
                log.error(
                    "the saved desired state cannot be opened with the agent's key file; "
                    "waiting for the server's",
                    extra={"path": str(self._desired_path), "error": str(exc) or "InvalidToken"},
                )
        if self._routes_path.exists():
            raw = json.loads(self._routes_path.read_text())
            self.applied = {k: RouteSpec.model_validate(v) for k, v in raw.items()}

    def set_desired(self, desired: DesiredState) -> None:
        self.desired = desired
        self.save_desired(desired)
        self.wake.set()

    def save_desired(self, desired: DesiredState) -> None:
        """Keep the desired state on disk (a restarted agent serves it without the server)."""
        # sealed: it holds the service env and the secrets of every release
        sealer = agent_sealer(self._desired_path.parent)
        atomic_write(self._desired_path, sealer.seal(desired.model_dump_json()).encode())

    def _save_routes(self) -> None:
        atomic_write(self._routes_path, self._routes())

    def _routes(self) -> bytes:
        return json.dumps({k: v.model_dump() for k, v in self.applied.items()}).encode()

    async def adopt(self) -> None:
        """Re-attach to instances left running by a previous agent process."""
        self.migrations.recover()
        for instance in await self.supervisor.adopt():
            key = (instance.app, instance.release)
            spec = self._desired_release(*key)
            # an adopted instance is health-checked again before it gets traffic
            # unless the router already sends it traffic (it was serving)
            serving = any(
                t.release == instance.release and t.port == instance.port
                for t in (self.applied.get(instance.app) or _empty(instance.app)).targets
            )
            rt = ReleaseRuntime(
                app=instance.app,
                release=instance.release,
                spec=spec,
                phase=Phase.HEALTHY if serving else Phase.STARTING,
                verified=serving,
                instance=instance,
                # its past is unknown: it may be the previous release, retired before now
                was_current=True,
                current_until=None if serving else time.monotonic(),
            )
            self.runtimes[key] = rt
            log.info(
                "adopted instance",
                extra={"app": instance.app, "release": instance.release, "pid": instance.pid},
            )

    def _desired_release(self, app: str, release: str) -> DesiredRelease | None:
        if self.desired is None:
            return None
        for desired_app in self.desired.apps:
            if desired_app.app == app:
                for r in desired_app.releases:
                    if r.release == release:
                        return r
        return None

    # -- the loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # cleared before the tick: a desired state that arrives during it wakes the next
            # one at once (cleared after, it waited for the timeout)
            self.wake.clear()
            try:
                await self.tick()
            except Exception as exc:
                log.exception("reconcile tick failed")
                self.errors = [f"reconcile failed: {exc}"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)

    async def tick(self) -> None:
        desired = self.desired
        if desired is None:
            return
        self.infra.want(desired.checks)
        await self.answers.from_desired(desired.challenges)
        wanted: set[tuple[str, str]] = set()
        for app in desired.apps:
            for spec in app.releases:
                key = (app.app, spec.release)
                wanted.add(key)
                self._want(key, spec, desired.generation)
            await self._route(app)
        await self._retire(wanted, {a.app for a in desired.apps})
        self.errors = []

    # -- desired releases: brought up, or back from draining or warm ----------

    def _want(self, key: tuple[str, str], spec: DesiredRelease, generation: int) -> None:
        rt = self.runtimes.get(key)
        if rt is None:
            rt = self.runtimes[key] = ReleaseRuntime(app=key[0], release=key[1], spec=spec)
        rt.spec = spec
        before = rt.phase
        rt.phase = want(
            Wanted(
                phase=before,
                verified=rt.verified,
                has_instance=rt.instance is not None,
                alive=self._alive(rt),
                migration_due=before in _MAY_MIGRATE and self.bring_up.migration_due(rt),
                failed_now=rt.failed_generation == generation,
            )
        )
        if before is Phase.FAILED and rt.phase is not Phase.FAILED:
            rt.error = None
        if before in (Phase.DRAINING, Phase.WARM):
            rt.drain_started = rt.warm_until = None
            self._changed()
        elif before is Phase.HEALTHY and rt.phase is Phase.STARTING:
            self._changed()  # its migration is due
        if rt.phase in BRINGING_UP and (rt.task is None or rt.task.done()):
            rt.task = asyncio.create_task(self.bring_up.run(rt, generation))

    def _alive(self, rt: ReleaseRuntime) -> bool:
        return rt.instance is not None and self.supervisor.is_running(rt.instance)

    # -- routing --------------------------------------------------------------

    async def _route(self, app: DesiredApp) -> None:
        """Give the router the desired weights once every weighted release is healthy."""
        releases = {
            r.release: Release(
                phase=rt.phase,
                port=rt.instance.port if rt.instance is not None else None,
                error=rt.error,
            )
            for r in app.releases
            if (rt := self.runtimes.get((app.app, r.release))) is not None
        }
        plan = plan_route(app, releases, self.bind, self.http_port)
        if isinstance(plan, Hold):
            self.routed[app.app] = False
            self.app_errors[app.app] = plan.error
            return
        top = plan.top
        self.keep_warm[app.app] = top.service.keep_warm
        self.keep_warm_releases[app.app] = top.service.keep_warm_releases
        served = self.applied.get(app.app)
        tls = top.service.tls
        if tls is not None and _orders_itself(tls) and plan.spec.domains:
            self.acme.keep_fresh(app.app, plan.spec.domains, tls)
        spec, tls_error = self.certs.with_tls(plan.spec, tls, served)
        why = (self.acme.errors.get(app.app) or tls.acme_error) if tls is not None else None
        if tls_error is None and why:
            tls_error = f"TLS: {why}; the current certificate keeps serving"
        if spec is None:
            self.routed[app.app] = False
            self.app_errors[app.app] = tls_error
            return
        if self.applied.get(app.app) != spec and not await self._apply(spec, top):
            return
        self.routed[app.app] = True
        self._mark_current(app.app, top.release)
        self.app_errors[app.app] = tls_error

    async def _apply(self, spec: RouteSpec, top: DesiredRelease) -> bool:
        """Hand the router a new routing; False if it refused it (and kept the previous one)."""
        app = spec.app
        try:
            await self.router.apply(spec)
        except RouterError as exc:
            # the router changed nothing: the previous routing keeps serving
            message = f"router refused the new routing: {exc}; the previous routing is kept"
            if self.app_errors.get(app) != message:
                log.error("routing refused", extra={"app": app, "error": str(exc)})
            self.routed[app] = False
            self.app_errors[app] = message
            return False
        self.applied[app] = spec
        # its fsyncs off the loop: they took up to a second on a busy disk, meanwhile the
        # long-poll's next answer (a kill switch) waited
        await asyncio.to_thread(atomic_write, self._routes_path, self._routes())
        self.installer.switch_current(app, top.release)
        self._prune_due = True
        log.info(
            "routing applied",
            extra={"app": app, "weights": {t.release: t.weight for t in spec.targets}},
        )
        self._changed()
        return True

    async def _tls_ready(self, app: str, service: ServiceSpec) -> None:
        """Before a release is brought up: its certificate can serve its domains."""
        assert service.tls is not None
        try:
            if _orders_itself(service.tls):
                await self.acme.ensure(app, service.domains, service.tls)
            self.certs.route(app, service.domains, service.tls)
        except CertError as exc:
            raise CertError(f"TLS: {exc}") from None

    def _mark_current(self, app: str, current: str) -> None:
        """Note which release is the app's current one, and when the others stopped being it."""
        now = time.monotonic()
        for (name, release), rt in self.runtimes.items():
            if name != app:
                continue
            if release == current:
                rt.was_current, rt.current_until = True, None
            elif rt.was_current and rt.current_until is None:
                rt.current_until = now

    def _serving(self, rt: ReleaseRuntime) -> bool:
        applied = self.applied.get(rt.app)
        return applied is not None and any(
            t.release == rt.release and t.weight > 0 for t in applied.targets
        )

    # -- releases no longer desired: drained, kept warm, stopped --------------

    async def _retire(self, wanted: set[tuple[str, str]], apps: set[str]) -> None:
        """Drain, keep warm, then stop releases that are no longer desired."""
        now = time.monotonic()
        if any(rt.phase is Phase.DRAINING for rt in self.runtimes.values()):
            # stopping an instance with requests in flight would break them: read fresh counts
            self.metrics = await self.router.metrics()
        warm = self._stay_warm(wanted, now)
        for key, rt in list(self.runtimes.items()):
            if key in wanted or self._serving(rt):
                continue  # a serving one serves until the new routing can be applied
            if rt.task is not None and not rt.task.done():
                rt.task.cancel()
            await self._retire_one(rt, key in warm, now)
        await self._remove_apps(apps)
        self._prune(apps)

    async def _retire_one(self, rt: ReleaseRuntime, kept_warm: bool, now: float) -> None:
        """Move a retired release on through draining and warm as far as it goes this tick."""
        while True:
            move = retire(self._retiring(rt, kept_warm), now)
            rt.phase = move.phase
            if move.action is Retire.WAIT:
                return
            if move.action is Retire.STOP:
                if rt.instance is not None:
                    await self.supervisor.stop(rt.instance, grace=10)
                del self.runtimes[rt.key]
                self._prune_due = True
                log.info("release stopped", extra={"app": rt.app, "release": rt.release})
                self._changed()
                return
            if move.action is Retire.DRAIN:
                rt.drain_started = move.at
            else:
                rt.warm_until = move.at
            self._changed()

    def _retiring(self, rt: ReleaseRuntime, kept_warm: bool) -> Retiring:
        # the release taking over says how long its predecessor stays warm
        keep = self.keep_warm.get(
            rt.app, rt.spec.service.keep_warm if rt.spec else DEFAULT_KEEP_WARM
        )
        return Retiring(
            phase=rt.phase,
            verified=rt.verified,
            has_instance=rt.instance is not None,
            alive=self._alive(rt),
            in_flight=self._in_flight(rt),
            drain=rt.spec.service.drain if rt.spec else 30.0,
            drain_started=rt.drain_started,
            kept_warm=kept_warm,
            keep_warm=keep,
            warm_until=rt.warm_until,
        )

    async def _remove_apps(self, apps: set[str]) -> None:
        for app in list(self.applied):
            if app not in apps:
                await self.router.remove(app)
                del self.applied[app]
                self._save_routes()
                self._changed()

    def _prune(self, apps: set[str]) -> None:
        if not self._prune_due:
            return
        self._prune_due = False
        in_use: dict[str, set[str]] = {}
        for app_name, release in self.runtimes:
            in_use.setdefault(app_name, set()).add(release)
        for app_name in apps:
            # keep the newest 5 releases on disk, never one that runs
            self.installer.prune(app_name, keep=5, in_use=in_use.get(app_name, set()))

    def _stay_warm(self, wanted: set[tuple[str, str]], now: float) -> set[tuple[str, str]]:
        """The retired releases that may stay warm: per app, the last keep_warm_releases."""
        retired: dict[str, list[Retired]] = {}
        counts: dict[str, int] = {}
        for key, rt in self.runtimes.items():
            if key in wanted or rt.instance is None or self._serving(rt):
                continue
            if rt.phase not in (Phase.HEALTHY, Phase.DRAINING, Phase.WARM):
                continue
            retired.setdefault(rt.app, []).append(
                Retired(
                    rt.release,
                    (rt.current_until or now) if rt.was_current else None,
                    rt.instance.first_started_at,
                )
            )
            # the release taking over says how many stay warm, as it says for how long
            counts.setdefault(
                rt.app,
                self.keep_warm_releases.get(
                    rt.app,
                    rt.spec.service.keep_warm_releases if rt.spec else DEFAULT_KEEP_WARM_RELEASES,
                ),
            )
        return {
            (app, release)
            for app, releases in retired.items()
            for release in stay_warm(releases, counts[app])
        }

    def _in_flight(self, rt: ReleaseRuntime) -> int:
        if self.metrics is None:
            return 0
        app = self.metrics.apps.get(rt.app)
        counters = app.releases.get(rt.release) if app else None
        return counters.in_flight if counters else 0

    def _changed(self) -> None:
        self.changed.set()
        self.wake.set()

    def _migration(self, app: str, release: str) -> MigrationResult | None:
        """The migration the desired state asks of a release; None when it asks for none."""
        spec = self._desired_release(app, release)
        if spec is None or spec.migrate is None:
            return None
        return self.migrations.result(app, spec.migrate.id)

    def observed(self, router_alive: bool) -> ObservedState:
        desired = self.desired
        apps = observed_apps(self.runtimes, self.applied, self._migration)
        for app, obs in apps.items():
            obs.routed = self.routed.get(app, False)
            obs.error = self.app_errors.get(app)
            obs.current = self.installer.current(app)
        return ObservedState(
            host=self.name,
            generation=desired.generation if desired else -1,
            converged=converged(desired, self.runtimes, self.routed),
            router=self.router.name,
            router_alive=router_alive,
            address=None if self.bind in ("0.0.0.0", "::", "") else self.bind,
            http_port=self.http_port,
            https_port=self.https_port,
            apps=list(apps.values()),
            errors=list(self.errors),
            metrics=self.metrics,
            checks=self.infra.results(),
            agent_version=conveyor.__version__,
            challenges=self.answers.answering(),
        )


def _orders_itself(tls: TlsSpec) -> bool:
    """`tls: acme` with no certificate from the server (an older one): the agent orders."""
    return bool(tls.acme_directory) and tls.cert_pem is None


def _empty(app: str) -> RouteSpec:
    return RouteSpec(app=app, port=1)
