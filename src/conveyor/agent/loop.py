"""The agent's reconciler: converge this host toward its desired state, one tick at a time.

Per app: every desired release is installed, started and health-checked in the
background; the router gets the desired weights only once every release that
should take traffic is healthy (so a release that never gets healthy changes
nothing users see); a release no longer desired is drained, kept warm for
`keep_warm` (a rollback to it is then a weight switch), then stopped; only the last
`keep_warm_releases` previous releases (the ones current most recently) are kept
warm, the others stop once drained (see warmth.py).

A release whose desired state asks for a migration (`migrate`) runs it once, after
it is installed and before its instance starts (see migrations.py); a failed one
fails the release, so nothing is routed to it. A migration asked for a release that
already runs is run too (once), before the release counts as healthy again; if it
fails, the instance is left running (it may be serving) but the release is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.agent.errors import MigrationFailed
from conveyor.agent.health import wait_healthy
from conveyor.agent.installer import Installer, InstallError
from conveyor.agent.link import ServerLink
from conveyor.agent.migrations import Migrations
from conveyor.agent.routing.spec import Router, RouterError, RouterMetrics, RouteSpec, Target
from conveyor.agent.supervisor import Instance, Supervisor
from conveyor.agent.warmth import Retired, stay_warm
from conveyor.protocol import (
    DesiredApp,
    DesiredRelease,
    DesiredState,
    MigrationResult,
    ObservedApp,
    ObservedRelease,
    ObservedState,
)

log = logging.getLogger("conveyor.agent")

DEFAULT_KEEP_WARM = 600.0
DEFAULT_KEEP_WARM_RELEASES = 1


@dataclass
class ReleaseRuntime:
    """What this agent knows of one release of one app on this host."""

    app: str
    release: str
    spec: DesiredRelease | None
    phase: str = "installing"
    instance: Instance | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    failed_generation: int | None = None
    verified: bool = False  # passed a health check since it started
    drain_started: float | None = None
    warm_until: float | None = None
    # when it last stopped being the app's current (top-weighted) release; None while it is,
    # or if it never was (a preview, a canary rolled back): see warmth.py
    current_until: float | None = None
    was_current: bool = False


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
    ) -> None:
        self.data = data
        self.name = name
        self.link = link
        self.router = router
        self.installer = installer
        self.supervisor = supervisor
        self.migrations = Migrations(installer)
        self.bind = bind
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
            self.desired = DesiredState.model_validate_json(self._desired_path.read_text())
        if self._routes_path.exists():
            raw = json.loads(self._routes_path.read_text())
            self.applied = {k: RouteSpec.model_validate(v) for k, v in raw.items()}

    def set_desired(self, desired: DesiredState) -> None:
        self.desired = desired
        _write_atomic(self._desired_path, desired.model_dump_json())
        self.wake.set()

    def _save_routes(self) -> None:
        _write_atomic(
            self._routes_path,
            json.dumps({k: v.model_dump() for k, v in self.applied.items()}),
        )

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
                phase="healthy" if serving else "starting",
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
            try:
                await self.tick()
            except Exception as exc:
                log.exception("reconcile tick failed")
                self.errors = [f"reconcile failed: {exc}"]
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)

    async def tick(self) -> None:
        desired = self.desired
        if desired is None:
            return
        wanted: set[tuple[str, str]] = set()
        for app in desired.apps:
            for spec in app.releases:
                key = (app.app, spec.release)
                wanted.add(key)
                self._want(key, spec, desired.generation)
            await self._route(app)
        await self._retire(wanted, {a.app for a in desired.apps})
        self.errors = []

    def _want(self, key: tuple[str, str], spec: DesiredRelease, generation: int) -> None:
        rt = self.runtimes.get(key)
        if rt is None:
            rt = self.runtimes[key] = ReleaseRuntime(app=key[0], release=key[1], spec=spec)
        rt.spec = spec
        if rt.phase == "failed":
            if rt.failed_generation == generation:
                return  # don't retry in a loop; a new desired generation retries
            rt.phase, rt.error = "installing", None
        if rt.phase in ("draining", "warm"):
            rt.drain_started = rt.warm_until = None
            # back from draining or warm: only an instance that passed its health check
            # may take traffic again without a new one
            if not self._alive(rt):
                rt.phase = "installing"
            else:
                rt.phase = "healthy" if rt.verified else "starting"
            self._changed()
        if rt.phase == "healthy" and not self._alive(rt) and rt.instance is None:
            rt.phase = "installing"
        if rt.phase == "healthy" and self._migration_due(rt):
            rt.phase = "starting"  # healthy again once its migration ran and it passes a check
            self._changed()
        if rt.phase in ("installing", "starting") and (rt.task is None or rt.task.done()):
            rt.task = asyncio.create_task(self._bring_up(rt, generation))

    def _alive(self, rt: ReleaseRuntime) -> bool:
        return rt.instance is not None and self.supervisor.is_running(rt.instance)

    def _migration_due(self, rt: ReleaseRuntime) -> bool:
        """Whether the desired migration of a release has not (successfully) run."""
        if rt.spec is None or rt.spec.migrate is None:
            return False
        result = self.migrations.result(rt.app, rt.spec.migrate.id)
        return result is None or result.state != "succeeded"

    async def _bring_up(self, rt: ReleaseRuntime, generation: int) -> None:
        spec = rt.spec
        assert spec is not None
        service = spec.service
        try:
            if rt.instance is None:
                rt.phase = "installing"
                self._changed()
                release_dir = await self._install(rt.app, spec)
                await self._migrate(rt, spec, release_dir)
                rt.phase = "starting"
                self._changed()
                env = dict(service.env) | {
                    "CONVEYOR_APP": rt.app,
                    "CONVEYOR_RELEASE": rt.release,
                }
                rt.instance = await self.supervisor.start(
                    rt.app, rt.release, release_dir, service.start, env
                )
            elif self._migration_due(rt):
                release_dir = self.installer.release_dir(rt.app, rt.release)
                await self._migrate(rt, spec, release_dir)
            instance = rt.instance
            result = await wait_healthy(
                "127.0.0.1",
                instance.port,
                service.health_path,
                interval=service.health_interval,
                timeout=service.health_timeout,
                should_abort=lambda: self.supervisor.exit_reason(instance),
            )
            if not result.ok:
                raise InstallError(
                    f"release {rt.release} never became healthy on "
                    f"{service.health_path}: {result.detail}"
                )
            rt.phase, rt.error, rt.verified = "healthy", None, True
            log.info("release healthy", extra={"app": rt.app, "release": rt.release})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            rt.phase, rt.error, rt.failed_generation = "failed", str(exc), generation
            log.warning(
                "release failed", extra={"app": rt.app, "release": rt.release, "error": str(exc)}
            )
            # an instance that ran before its migration failed may be serving: the router
            # keeps the previous routing, and the instance stops once it is not desired
            if rt.instance is not None and not isinstance(exc, MigrationFailed):
                await self.supervisor.stop(rt.instance, grace=5)
                rt.instance = None
        finally:
            self._changed()

    async def _migrate(self, rt: ReleaseRuntime, spec: DesiredRelease, release_dir: Path) -> None:
        """Run the release's desired migration unless it ran; raise MigrationFailed if it failed."""
        request = spec.migrate
        if request is None:
            return
        self._changed()
        env = dict(spec.service.env) | {"CONVEYOR_APP": rt.app, "CONVEYOR_RELEASE": rt.release}
        try:
            result = await self.migrations.run(rt.app, rt.release, request, release_dir, env)
        finally:
            self._changed()
        if result.state != "succeeded":
            raise MigrationFailed(
                self.migrations.failure(rt.app, request.id)
                or f"migration {request.id} is {result.state} (for another release)"
            )

    async def _install(self, app: str, spec: DesiredRelease) -> Path:
        release_dir = self.installer.release_dir(app, spec.release)
        if self.installer.is_installed(app, spec.release):
            return release_dir
        archive = self.data / app / "downloads" / f"{spec.release}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self.installer.download(
                self.link.artifact_url(spec.artifact),
                self.link.headers,
                archive,
                spec.sha256,
                client=self.link.http,
            )
            release_dir = await asyncio.to_thread(self.installer.unpack, app, spec.release, archive)
        finally:
            archive.unlink(missing_ok=True)
        if spec.service.install_hook:
            await self.installer.run_hook(
                spec.service.install_hook,
                release_dir,
                dict(spec.service.env) | {"CONVEYOR_APP": app, "CONVEYOR_RELEASE": spec.release},
                self.data / app / "logs" / f"{spec.release}-install.log",
                timeout=600,
            )
        return release_dir

    async def _route(self, app: DesiredApp) -> None:
        """Give the router the desired weights once every weighted release is healthy."""
        weighted = [r for r in app.releases if r.weight > 0]
        not_ready = [
            r.release
            for r in weighted
            if (rt := self.runtimes.get((app.app, r.release))) is None
            or rt.phase != "healthy"
            or rt.instance is None
        ]
        if not_ready or not weighted:
            self.routed[app.app] = False
            failed = [
                rt
                for r in weighted
                if (rt := self.runtimes.get((app.app, r.release))) and rt.phase == "failed"
            ]
            self.app_errors[app.app] = (
                "; ".join(f"{rt.release}: {rt.error}" for rt in failed) + "; the previous "
                "routing is kept"
                if failed
                else None
            )
            return
        first = weighted[0].service
        top = max(weighted, key=lambda r: r.weight)
        self.keep_warm[app.app] = top.service.keep_warm
        self.keep_warm_releases[app.app] = top.service.keep_warm_releases
        targets = []
        for r in app.releases:
            rt = self.runtimes.get((app.app, r.release))
            if rt is not None and rt.instance is not None and rt.phase == "healthy":
                targets.append(Target(release=r.release, port=rt.instance.port, weight=r.weight))
        spec = RouteSpec(
            app=app.app,
            port=first.port,
            bind=self.bind,
            targets=targets,
            sticky=app.sticky,
            drain_timeout=first.drain,
        )
        if self.applied.get(app.app) != spec:
            try:
                await self.router.apply(spec)
            except RouterError as exc:
                # the router changed nothing: the previous routing keeps serving
                message = f"router refused the new routing: {exc}; the previous routing is kept"
                if self.app_errors.get(app.app) != message:
                    log.error("routing refused", extra={"app": app.app, "error": str(exc)})
                self.routed[app.app] = False
                self.app_errors[app.app] = message
                return
            self.applied[app.app] = spec
            self._save_routes()
            self.installer.switch_current(app.app, top.release)
            self._prune_due = True
            log.info(
                "routing applied",
                extra={"app": app.app, "weights": {t.release: t.weight for t in targets}},
            )
            self._changed()
        self.routed[app.app] = True
        self._mark_current(app.app, top.release)
        self.app_errors[app.app] = None

    async def _retire(self, wanted: set[tuple[str, str]], apps: set[str]) -> None:
        """Drain, keep warm, then stop releases that are no longer desired."""
        now = time.monotonic()
        if any(rt.phase == "draining" for rt in self.runtimes.values()):
            # stopping an instance with requests in flight would break them: read fresh counts
            self.metrics = await self.router.metrics()
        warm = self._stay_warm(wanted, now)
        for key, rt in list(self.runtimes.items()):
            if key in wanted or self._serving(rt):
                continue  # a serving one serves until the new routing can be applied
            if rt.task is not None and not rt.task.done():
                rt.task.cancel()
            if rt.phase in ("starting", "installing") and not rt.verified:
                rt.phase = "stopped"  # never healthy: nothing worth keeping warm
            if rt.phase == "healthy" and rt.instance is not None:
                rt.phase, rt.drain_started = "draining", now
                self._changed()
            if rt.phase == "draining":
                drain = rt.spec.service.drain if rt.spec else 30.0
                if self._in_flight(rt) == 0 or now - (rt.drain_started or now) >= drain:
                    # the release taking over says how long its predecessor stays warm;
                    # one retired before the last keep_warm_releases stops at once
                    keep = self.keep_warm.get(
                        rt.app, rt.spec.service.keep_warm if rt.spec else DEFAULT_KEEP_WARM
                    )
                    rt.phase, rt.warm_until = "warm", now + (keep if key in warm else 0.0)
                    self._changed()
            if (
                rt.phase == "warm"
                and key in warm
                and now < (rt.warm_until or now)
                and self._alive(rt)
            ):
                continue
            if rt.phase in ("warm", "failed", "installing", "starting", "stopped") or (
                rt.instance is None and rt.phase != "draining"
            ):
                if rt.instance is not None:
                    await self.supervisor.stop(rt.instance, grace=10)
                del self.runtimes[key]
                self._prune_due = True
                log.info("release stopped", extra={"app": rt.app, "release": rt.release})
                self._changed()
        for app in list(self.applied):
            if app not in apps:
                await self.router.remove(app)
                del self.applied[app]
                self._save_routes()
                self._changed()
        if self._prune_due:
            self._prune_due = False
            in_use: dict[str, set[str]] = {}
            for app_name, release in self.runtimes:
                in_use.setdefault(app_name, set()).add(release)
            for app_name in apps:
                # keep the newest 5 releases on disk, never one that runs
                self.installer.prune(app_name, keep=5, in_use=in_use.get(app_name, set()))

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

    def _stay_warm(self, wanted: set[tuple[str, str]], now: float) -> set[tuple[str, str]]:
        """The retired releases that may stay warm: per app, the last keep_warm_releases."""
        retired: dict[str, list[Retired]] = {}
        counts: dict[str, int] = {}
        for key, rt in self.runtimes.items():
            if key in wanted or rt.instance is None or self._serving(rt):
                continue
            if rt.phase not in ("healthy", "draining", "warm"):
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

    # -- what is reported ------------------------------------------------------

    def _migration(self, app: str, release: str) -> MigrationResult | None:
        """The migration the desired state asks of a release; None when it asks for none."""
        spec = self._desired_release(app, release)
        if spec is None or spec.migrate is None:
            return None
        return self.migrations.result(app, spec.migrate.id)

    def observed(self, router_alive: bool) -> ObservedState:
        desired = self.desired
        apps: dict[str, ObservedApp] = {}
        for (app, release), rt in sorted(self.runtimes.items()):
            applied = self.applied.get(app)
            weight = next(
                (t.weight for t in (applied.targets if applied else []) if t.release == release), 0
            )
            obs = apps.setdefault(app, ObservedApp(app=app))
            obs.releases.append(
                ObservedRelease(
                    release=release,
                    phase=rt.phase,
                    weight=weight,
                    instances=1 if rt.instance is not None else 0,
                    port=rt.instance.port if rt.instance else None,
                    pid=rt.instance.pid if rt.instance else None,
                    restarts=rt.instance.restarts if rt.instance else 0,
                    error=rt.error,
                    migration=self._migration(app, release),
                )
            )
        for app, obs in apps.items():
            obs.routed = self.routed.get(app, False)
            obs.error = self.app_errors.get(app)
            obs.current = self.installer.current(app)
        converged = desired is not None and all(
            self.routed.get(a.app, False)
            and all(
                (found := self.runtimes.get((a.app, r.release))) is not None
                and found.phase == "healthy"
                for r in a.releases
            )
            and not any(
                other.app == a.app and other.phase == "draining" for other in self.runtimes.values()
            )
            for a in desired.apps
        )
        return ObservedState(
            host=self.name,
            generation=desired.generation if desired else -1,
            converged=converged,
            router=self.router.name,
            router_alive=router_alive,
            address=None if self.bind in ("0.0.0.0", "::", "") else self.bind,
            apps=list(apps.values()),
            errors=list(self.errors),
            metrics=self.metrics,
        )


def _empty(app: str) -> RouteSpec:
    return RouteSpec(app=app, port=1)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
