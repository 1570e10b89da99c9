"""Bringing one release up on this host: install, migrate, start, health-check.

A release whose desired state asks for a migration (`migrate`) runs it once, after
it is installed and before its instance starts (see migrations.py); a failed one
fails the release, so nothing is routed to it. A migration asked for a release that
already runs is run too (once), before the release counts as healthy again; if it
fails, the instance is left running (it may be serving) but the release is failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from conveyor.agent.errors import MigrationFailed
from conveyor.agent.health import wait_healthy
from conveyor.agent.installer import Installer, InstallError
from conveyor.agent.lifecycle import Phase
from conveyor.agent.link import ServerLink
from conveyor.agent.migrations import Migrations
from conveyor.agent.runtime import ReleaseRuntime
from conveyor.agent.supervisor import Supervisor
from conveyor.protocol import DesiredRelease, ServiceSpec

__all__ = ["BringUp"]

log = logging.getLogger("conveyor.agent")


class BringUp:
    """Takes a release from installing (or starting) to healthy, or to failed."""

    def __init__(
        self,
        *,
        data: Path,
        link: ServerLink,
        installer: Installer,
        supervisor: Supervisor,
        migrations: Migrations,
        changed: Callable[[], None],
        tls_ready: Callable[[str, ServiceSpec], Awaitable[None]] | None = None,
    ) -> None:
        self.data = data
        self.link = link
        self.installer = installer
        self.supervisor = supervisor
        self.migrations = migrations
        self._changed = changed
        # the release's certificate is fit to serve (or obtained over ACME); raises if not
        self.tls_ready = tls_ready

    def migration_due(self, rt: ReleaseRuntime) -> bool:
        """Whether the desired migration of a release has not (successfully) run."""
        if rt.spec is None or rt.spec.migrate is None:
            return False
        result = self.migrations.result(rt.app, rt.spec.migrate.id)
        return result is None or result.state != "succeeded"

    async def run(self, rt: ReleaseRuntime, generation: int) -> None:
        try:
            await self._up(rt)
            rt.phase, rt.error, rt.verified = Phase.HEALTHY, None, True
            log.info("release healthy", extra={"app": rt.app, "release": rt.release})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            rt.phase, rt.error, rt.failed_generation = Phase.FAILED, str(exc), generation
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

    async def _up(self, rt: ReleaseRuntime) -> None:
        spec = rt.spec
        assert spec is not None
        service = spec.service
        if rt.instance is None:
            rt.phase = Phase.INSTALLING
            self._changed()
            if service.tls is not None and self.tls_ready is not None:
                await self.tls_ready(rt.app, service)
            release_dir = await self._install(rt.app, spec)
            await self._migrate(rt, spec, release_dir)
            rt.phase = Phase.STARTING
            self._changed()
            env = dict(service.env) | {
                "CONVEYOR_APP": rt.app,
                "CONVEYOR_RELEASE": rt.release,
            }
            rt.instance = await self.supervisor.start(
                rt.app,
                rt.release,
                release_dir,
                service.start,
                env,
                user=service.user,
                limits=service.limits,
            )
        elif self.migration_due(rt):
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

    async def _migrate(self, rt: ReleaseRuntime, spec: DesiredRelease, release_dir: Path) -> None:
        """Run the release's desired migration unless it ran; raise MigrationFailed if it failed."""
        request = spec.migrate
        if request is None:
            return
        self._changed()
        env = dict(spec.service.env) | {"CONVEYOR_APP": rt.app, "CONVEYOR_RELEASE": rt.release}
        try:
            result = await self.migrations.run(
                rt.app, rt.release, request, release_dir, env, user=spec.service.user
            )
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
            for tried in range(1, len(self.link.servers) + 1):
                server = self.link.server
                try:
                    await self.installer.download(
                        self.link.artifact_url(spec.artifact),
                        self.link.headers,
                        archive,
                        spec.sha256,
                        client=self.link.http,
                    )
                    break
                except InstallError as exc:
                    # that server went away (several share one database): the next one
                    # has the same artifact; False once each was tried without an answer
                    if not isinstance(exc.__cause__, httpx.TransportError):
                        raise
                    if not self.link.fail_over(server) or tried == len(self.link.servers):
                        raise
                    log.warning("download moved to another server", extra={"error": str(exc)})
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
