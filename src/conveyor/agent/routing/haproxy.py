"""The HAProxy router driver: HAProxy is the data plane, this object steers it.

One frontend and one backend per app; each backend has a fixed number of server
slots (s1..sN) that the driver points at the release instances. Weights and target
swaps go through the Runtime API only (no reload); adding, moving or removing a
listener rewrites haproxy.cfg and reloads the master seamlessly (listening sockets
pass to the new worker, the old one finishes its requests). Requests, 5xx and
latency per release come from HAProxy's request logs (see haproxy_logs.py),
connection failures and in-flight requests from its stats. What each slot carries
and the counters live in `<workdir>/state.json`, so a restarted agent adopts the
running HAProxy instead of restarting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from conveyor.agent.routing import haproxy_flags
from conveyor.agent.routing.haproxy_certs import (
    certificate_file,
    prune_certificates,
    read_certificate,
    set_challenges,
    swap_certificate,
    tls_moved,
)
from conveyor.agent.routing.haproxy_config import (
    PIN_SPREAD,
    Paths,
    backend_name,
    check_listener,
    ip_literal,
    listener_problem,
    remove_maps,
    render_config,
    runtime_commands,
    write_atomic,
    write_maps,
    write_routes,
)
from conveyor.agent.routing.haproxy_counting import Sinks, count_sample
from conveyor.agent.routing.haproxy_hosts import check_claims
from conveyor.agent.routing.haproxy_logs import LogReceiver, Sample
from conveyor.agent.routing.haproxy_runtime import (
    ProcInfo,
    check_version,
    connect_failures,
    in_flight,
    is_our_haproxy,
    launch,
    reload,
    replace_map,
    runtime,
    server_rows,
    show_proc,
    terminate,
    validate,
    wait_ready,
)
from conveyor.agent.routing.haproxy_state import (
    AppState,
    RouterState,
    counters_of,
    credit,
    load_state,
    new_slots,
    pins,
    plan_slots,
    previews,
    previews_meanwhile,
    prune_totals,
    release_counters,
    save_state,
    slot_releases,
    validate_targets,
)
from conveyor.agent.routing.haproxy_tls import cert_digest, cert_file
from conveyor.agent.routing.spec import (
    AppMetrics,
    RouterError,
    RouterMetrics,
    RouteSpec,
)

__all__ = ["HAProxyRouter", "RouterError"]

log = logging.getLogger("conveyor.agent.routing.haproxy")

JANITOR_EVERY = 0.25


class HAProxyRouter:
    """Drives a HAProxy master-worker process through its master CLI and Runtime API."""

    name = "haproxy"

    def __init__(
        self,
        workdir: Path,
        *,
        haproxy: str = "haproxy",
        slots: int = 8,
        stop_grace: float = 10.0,
    ) -> None:
        if not 1 <= slots <= 256:
            raise RouterError(f"slots={slots}: expected 1 to 256 server slots per app")
        self.paths = Paths.for_workdir(workdir)
        self.haproxy = haproxy
        self.slots = slots
        self.stop_grace = stop_grace
        self.state = RouterState()
        self._started = False
        self._lock = asyncio.Lock()
        self._logs: LogReceiver | None = None
        self._janitor: asyncio.Task[None] | None = None
        # (backend, slot) -> where its log lines count; cleared whenever slots or totals change
        self._sinks: Sinks = {}

    # -- process -----------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            self.paths.prepare()
            await check_version(self.haproxy)
            if self._logs is None:
                self.state = load_state(self.paths.state)
                # Listen before HAProxy may log; the port is kept across agent restarts
                # (a new one, and a reload, only if another process took it meanwhile).
                self._logs = LogReceiver(self.state.log_port, self.state.log_token, self._on_log)
                self._logs.start()
                self.state.log_port = self._logs.port
            proc = await self._running()
            if proc is None:
                await self._launch()
            else:
                await self._adopt(proc)
            self._sinks.clear()
            self._started = True
            save_state(self.paths.state, self.state, durable=True)
            self._kick_janitor()

    async def _running(self) -> ProcInfo | None:
        """The HAProxy master of this workdir, if one answers (possibly mid-reload)."""
        pid = self.state.master_pid
        ours = pid is not None and is_our_haproxy(pid, self.paths)
        if not ours:
            # No master we know of: adopt one only if it answers (a state file lost),
            # without waiting on a socket left behind by a killed one.
            with contextlib.suppress(RouterError):
                if (await show_proc(self.paths)).workers:
                    return await wait_ready(self.paths, timeout=2.0)
            return None
        try:
            return await wait_ready(self.paths, timeout=5.0)
        except RouterError:
            if pid is not None and ours:
                # Alive but mute: a wedged master would keep the ports; replace it.
                log.warning("haproxy master does not answer; killing it", extra={"pid": pid})
                await terminate(pid, self.paths, grace=0.0)
            return None

    async def _launch(self) -> None:
        self.state.reset_counters(None, 0.0)
        for app in self.state.apps.values():
            for slot in app.slots:
                if slot.state == "drain":
                    slot.state, slot.drain_until = "maint", None
        try:
            self._write_config(self.state.apps)
            await launch(self.haproxy, self.paths)
        except RouterError as exc:
            if not self.state.apps:
                raise
            # Serving the remembered apps again is a courtesy; the agent re-applies them.
            log.warning("cannot restore apps in haproxy; starting empty", extra={"error": str(exc)})
            for name in self.state.apps:
                remove_maps(name, self.paths)
            self.state.apps = {}
            self._write_config({})
            await launch(self.haproxy, self.paths)
        proc = await wait_ready(self.paths)
        self.state.reset_counters(proc.master_pid, time.time())
        where = str(self.paths.workdir)
        log.info("haproxy started", extra={"pid": proc.master_pid, "workdir": where})

    async def _adopt(self, proc: ProcInfo) -> None:
        if self.state.master_pid != proc.master_pid:
            # Our record is of another HAProxy life: its counters mean nothing here.
            self.state.reset_counters(proc.master_pid, time.time() - proc.uptime)
        rows = await server_rows(self.paths, proc)
        backends = {r.backend for worker in rows.values() for r in worker}
        expected = {backend_name(a) for a in self.state.apps}
        text = self._render(self.state.apps)
        on_disk = self.paths.config.read_text() if self.paths.config.exists() else ""
        if backends != expected or text != on_disk:
            log.warning("haproxy config differs from the driver's record; reloading it")
            await self._reconfigure(self.state.apps)
        log.info("haproxy adopted", extra={"pid": proc.master_pid})

    async def alive(self) -> bool:
        try:
            proc = await show_proc(self.paths)
        except RouterError:
            return False
        return bool(proc.workers)

    async def stop(self) -> None:
        async with self._lock:
            await self._close()
            pid = self.state.master_pid
            if pid is None and self.paths.pidfile.exists():
                with contextlib.suppress(ValueError):
                    pid = int(self.paths.pidfile.read_text().split()[0])
            if pid is not None:
                await terminate(pid, self.paths, self.stop_grace)
            self.state.master_pid = None
            if self.paths.state.parent.exists():
                save_state(self.paths.state, self.state, durable=True)
            self._started = False

    async def close(self) -> None:
        """Let go of HAProxy without stopping it (the agent is exiting or restarting)."""
        async with self._lock:
            await self._close()
            if self._started:
                save_state(self.paths.state, self.state, durable=True)
            self._started = False

    async def _close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
            self._janitor = None
        if self._logs is not None:
            self._logs.close()
            self._logs = None

    # -- routes ------------------------------------------------------------

    async def apply(self, spec: RouteSpec) -> None:
        async with self._lock:
            self._require_started()
            validate_targets(spec.app, spec.targets)
            bind = ip_literal(spec.bind, f"app {spec.app}: bind address")
            for t in spec.targets:
                ip_literal(t.host, f"app {spec.app}: target host")
            current = self.state.apps.get(spec.app)
            routing = (spec.domains, spec.path_prefix, spec.strip_prefix)
            moved = current is None or (current.bind, current.port) != (bind, spec.port)
            # the shared port may already be HAProxy's own, for ACME answers
            acme_port = bool(spec.domains) and self.state.acme == (bind, spec.port)
            if moved and not acme_port:
                check_listener(
                    spec.app, bind, spec.port, self.state.apps, current, bool(spec.domains)
                )
            busy = await self._observe()
            slots = plan_slots(
                current.slots if current is not None else new_slots(self.slots),
                spec.targets,
                busy=busy.get(spec.app, {}),
                now=time.time(),
                drain_timeout=spec.drain_timeout,
                app=spec.app,
            )
            pem = read_certificate(spec)
            app = AppState(
                app=spec.app,
                bind=bind,
                port=spec.port,
                sticky=spec.sticky,
                drain_timeout=spec.drain_timeout,
                slots=slots,
                domains=spec.domains,
                path_prefix=spec.path_prefix,
                strip_prefix=spec.strip_prefix,
                tls_port=spec.tls.port if spec.tls else None,
                tls_cert=cert_digest(pem) if pem is not None else "",
                redirect_http=spec.tls.redirect_http if spec.tls else True,
                flags=haproxy_flags.program(spec),
                guarded=sorted(spec.flags.guarded) if spec.flags is not None else [],
            )
            if app.domains:
                check_claims(app, self.state.apps)
            if current is not None:
                was = (current.domains, current.path_prefix, current.strip_prefix)
                # by a reload: names or prefix changed (a new route map and backend rules),
                # joining or leaving the HTTPS port or redirecting, users read from another
                # cookie or header (the backend's flags rules)
                users = haproxy_flags.user_fetch
                moved = moved or routing != was or tls_moved(current, app)
                moved = moved or users(current.flags) != users(app.flags)
            cert = cert_file(self.paths.certs, spec.app)
            if moved:
                with certificate_file(cert, pem):
                    await self._reconfigure({**self.state.apps, spec.app: app})
            else:
                assert current is not None
                if pem is not None and current.tls_cert != app.tls_cert:
                    # a new certificate: swapped through the Runtime API, no reload
                    await swap_certificate(self.paths.admin_sock, cert, pem)
                    write_atomic(cert, pem.decode(errors="replace"))
                await self._steer(current, app)
                if current.flags != app.flags and not await self._flags(app):
                    await self._reconfigure({**self.state.apps, spec.app: app})
            self.state.apps[spec.app] = app
            self._sinks.clear()
            write_maps(app, self.paths)
            write_routes(self.state.apps.values(), self.paths, self.state.acme)
            write_atomic(self.paths.config, self._render(self.state.apps))
            prune_certificates(self.paths.certs, self.state.apps.values())
            save_state(self.paths.state, self.state, durable=True)
            self._kick_janitor()

    async def challenges(self, bind: str, port: int, answers: dict[str, str]) -> None:
        async with self._lock:
            self._require_started()
            where = (ip_literal(bind, "ACME bind address"), port)
            if self.state.acme != where:
                # a plain shared frontend there, even before any app with domains
                self.state.acme = where
                await self._reconfigure(dict(self.state.apps))
                save_state(self.paths.state, self.state, durable=True)
            await set_challenges(self.paths.admin_sock, self.paths.challenges, answers)
            write_atomic(self.paths.challenges, "".join(f"{k} {v}\n" for k, v in answers.items()))

    async def remove(self, app: str) -> None:
        async with self._lock:
            self._require_started()
            if app not in self.state.apps:
                return
            await self._reconfigure({k: v for k, v in self.state.apps.items() if k != app})
            del self.state.apps[app]
            remove_maps(app, self.paths)
            prune_totals(self.state)
            self._sinks.clear()
            save_state(self.paths.state, self.state, durable=True)

    async def _steer(self, old: AppState, new: AppState) -> None:
        """Bring an app's slots from `old` to `new` through the Runtime API, in an order that
        never leaves a request without a server: new targets up, maps, then old ones down.

        A preview must never reach another release than the one it names: entries naming
        a slot that will carry another release go first, before the slot is re-pointed."""
        up, down = runtime_commands(old, new)
        previews_map = self.paths.previews_map(new.app)
        before, after = previews(old, PIN_SPREAD), previews(new, PIN_SPREAD)
        meanwhile = previews_meanwhile(old, new, PIN_SPREAD)
        if meanwhile != before:
            await replace_map(self.paths, previews_map, meanwhile)
        if slot_releases(old) != slot_releases(new):
            await replace_map(self.paths, self.paths.slots_map(new.app), slot_releases(new))
        for command in up:
            await runtime(self.paths, command)
        if pins(old, PIN_SPREAD) != pins(new, PIN_SPREAD):
            await replace_map(self.paths, self.paths.pins_map(new.app), pins(new, PIN_SPREAD))
        if after != meanwhile:
            await replace_map(self.paths, previews_map, after)
        for command in down:
            await runtime(self.paths, command)

    async def _flags(self, app: AppState) -> bool:
        """New flags through the Runtime API; False if the running HAProxy has no flags map
        for the app (a configuration written before flags were): it takes a reload."""
        path = haproxy_flags.flags_map(self.paths.maps, app.app)
        try:
            await replace_map(self.paths, path, haproxy_flags.entries(app.flags))
        except RouterError:
            return False
        return True

    def _write_config(self, apps: dict[str, AppState]) -> None:
        for app in apps.values():
            write_maps(app, self.paths)
        write_routes(apps.values(), self.paths, self.state.acme)
        write_atomic(self.paths.config, self._render(apps))

    async def _reconfigure(self, apps: dict[str, AppState]) -> None:
        """Rewrite haproxy.cfg for `apps` and reload; on failure put the old one back."""
        await self._observe()  # credit the outgoing worker up to this moment
        candidate = self.paths.config.with_name("haproxy.cfg.new")
        for app in apps.values():
            write_maps(app, self.paths)
        write_routes(apps.values(), self.paths, self.state.acme)
        write_atomic(candidate, self._render(apps))
        previous = self.paths.config.read_text() if self.paths.config.exists() else None
        reloaded = False
        try:
            await validate(self.haproxy, candidate)
            os.replace(candidate, self.paths.config)
            reloaded = True
            await reload(self.paths)
        except RouterError as exc:
            # The master does not say why its new worker failed; a listener is the usual cause.
            reason = listener_problem(apps, self.state.apps, self.state.acme) if reloaded else None
            if previous is not None:
                write_atomic(self.paths.config, previous)
            for name in set(apps) - set(self.state.apps):
                remove_maps(name, self.paths)
            for app in self.state.apps.values():
                write_maps(app, self.paths)
            write_routes(self.state.apps.values(), self.paths, self.state.acme)
            if reloaded:
                with contextlib.suppress(RouterError):
                    await reload(self.paths)  # out of the master's wait mode, on the old config
            if reason is not None:
                raise RouterError(f"HAProxy reload failed: {reason}") from exc
            raise
        with contextlib.suppress(RouterError):
            await self._observe()

    def _render(self, apps: dict[str, AppState]) -> str:
        return render_config(
            apps.values(),
            self.paths,
            log_port=self.state.log_port,
            log_token=self.state.log_token,
            acme=self.state.acme,
        )

    # -- metrics -----------------------------------------------------------

    async def _observe(self) -> dict[str, dict[str, int]]:
        """Read every worker's server counters, credit them to releases, and return the
        in-flight requests per app and slot."""
        rows = await server_rows(self.paths, await show_proc(self.paths))
        credit(self.state, connect_failures(rows))
        return in_flight(rows)

    async def metrics(self) -> RouterMetrics:
        async with self._lock:
            self._require_started()
            busy = await self._observe()
            prune_totals(self.state)
            self._sinks.clear()
            apps = {
                name: AppMetrics(
                    app=name,
                    releases=release_counters(
                        app, self.state.totals.get(name, {}), busy.get(name, {})
                    ),
                    flags={
                        k: counters_of(t) for k, t in self.state.flag_totals.get(name, {}).items()
                    },
                )
                for name, app in self.state.apps.items()
            }
            save_state(self.paths.state, self.state)
            return RouterMetrics(backend="haproxy", started_at=self.state.started_at, apps=apps)

    def _on_log(self, sample: Sample) -> None:
        count_sample(self.state, self._sinks, sample)

    # -- draining ----------------------------------------------------------

    def _kick_janitor(self) -> None:
        draining = any(s.state == "drain" for a in self.state.apps.values() for s in a.slots)
        if draining and (self._janitor is None or self._janitor.done()):
            self._janitor = asyncio.create_task(self._drain_loop(), name="haproxy-drain")

    async def _drain_loop(self) -> None:
        """Move draining slots to maint once idle (in every worker) or past their deadline."""
        while True:
            await asyncio.sleep(JANITOR_EVERY)
            async with self._lock:
                try:
                    if not await self._finish_drains():
                        return
                except RouterError as exc:
                    if not await self.alive():
                        return  # start() resumes the drains with the next HAProxy
                    log.warning("haproxy drain check failed", extra={"error": str(exc)})

    async def _finish_drains(self) -> bool:
        draining = [(a, s) for a in self.state.apps.values() for s in a.slots if s.state == "drain"]
        if not draining:
            return False
        busy = await self._observe()
        now = time.time()
        changed = False
        for app, slot in draining:
            if busy.get(app.app, {}).get(slot.name, 0) and now < (slot.drain_until or 0):
                continue
            await runtime(self.paths, f"set server {backend_name(app.app)}/{slot.name} state maint")
            slot.state, slot.drain_until = "maint", None
            changed = True
        if changed:
            write_atomic(self.paths.config, self._render(self.state.apps))
            save_state(self.paths.state, self.state, durable=True)
        return any(s.state == "drain" for a in self.state.apps.values() for s in a.slots)

    def _require_started(self) -> None:
        if not self._started:
            raise RouterError("the HAProxy router is not started: call start() first")
