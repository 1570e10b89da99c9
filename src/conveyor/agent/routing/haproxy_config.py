"""The files HAProxy reads: haproxy.cfg and three map files per app, rendered from driver state.

The configuration always describes the whole current state (every app, every slot
with its address, weight and state), so that a reload starts the new worker exactly
where the runtime API had brought the old one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.agent.routing import haproxy_flags
from conveyor.agent.routing.haproxy_hosts import (
    route_entries,
    routes_map,
    shared_frontend,
    shared_key,
    shares_port,
    strip_lines,
)
from conveyor.agent.routing.haproxy_state import AppState, Slot, pins, previews, slot_releases
from conveyor.agent.routing.haproxy_tls import (
    acme_lines,
    redirect_lines,
    tls_files,
    tls_frontend,
    tls_groups,
)
from conveyor.agent.routing.spec import PREVIEW_HEADER, RouterError

COOKIE = "conveyor_release"
LOG_TAG = "cvy1"
# Backend, server slot, status, %Ta (whole milliseconds) and the same in microseconds
# from two `date(0,us)` readings (the frontend notes the first one); last, the request's
# X-Conveyor-Flags answers ("-" without flags; spaces inside: it is the rest of the line),
# counted per answer of a flag under a guarded rollout (haproxy_counting).
LOG_FIELDS = "%b %s %ST %Ta %[date(0,us),sub(txn.t0)] %[var(txn.cvyans)]"
PIN_SPREAD = 12
# sockaddr_un.sun_path is 108 bytes with its NUL, but HAProxy binds "<path>.<pid>.tmp" first
# and refuses paths over 97 characters: keep under that, with room for the longest socket name.
MAX_SOCKET_PATH = 90


@dataclass(frozen=True)
class Paths:
    """Where the driver keeps HAProxy's files: state in `workdir`, sockets in `rundir`."""

    workdir: Path
    rundir: Path

    @classmethod
    def for_workdir(cls, workdir: Path) -> Paths:
        workdir = workdir.resolve()
        rundir = workdir
        longest = max(len(str(workdir / name)) for name in ("master.sock", "admin.sock"))
        if longest > MAX_SOCKET_PATH:
            # Unix socket paths are short; a long data dir gets its sockets in a private
            # directory named after it, so that a restarted agent finds them again.
            digest = hashlib.sha256(str(workdir).encode()).hexdigest()[:16]
            rundir = Path(tempfile.gettempdir()) / f"conveyor-haproxy-{digest}"
        return cls(workdir, rundir)

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.maps.mkdir(exist_ok=True)
        self.certs.mkdir(mode=0o700, exist_ok=True)
        if not self.challenges.exists():
            write_atomic(self.challenges, "")
        self.rundir.mkdir(mode=0o700, exist_ok=True)
        if self.rundir != self.workdir and self.rundir.stat().st_uid != os.getuid():
            raise RouterError(
                f"{self.rundir} belongs to another user; remove it or shorten the data dir"
            )

    @property
    def config(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def state(self) -> Path:
        return self.workdir / "state.json"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "haproxy.pid"

    @property
    def log(self) -> Path:
        return self.workdir / "haproxy.log"

    @property
    def maps(self) -> Path:
        return self.workdir / "maps"

    @property
    def master_sock(self) -> Path:
        return self.rundir / "master.sock"

    @property
    def admin_sock(self) -> Path:
        return self.rundir / "admin.sock"

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    @property
    def challenges(self) -> Path:
        return self.maps / "acme.challenges"

    def slots_map(self, app: str) -> Path:
        return self.maps / f"{app}.slots"

    def pins_map(self, app: str) -> Path:
        return self.maps / f"{app}.pins"

    def previews_map(self, app: str) -> Path:
        return self.maps / f"{app}.previews"

    def routes(self, bind: str, port: int) -> Path:
        return routes_map(self.maps, bind, port)


def ip_literal(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RouterError(f"{what} {value!r}: HAProxy needs an IP address here") from None


def address(host: str, port: int) -> str:
    # HAProxy splits the port at the last colon, which also works for IPv6 literals.
    return f"{host}:{port}"


def backend_name(app: str) -> str:
    return f"be_{app}"


def app_of_backend(name: str) -> str | None:
    return name[3:] if name.startswith("be_") else None


def render_config(
    apps: Iterable[AppState],
    paths: Paths,
    *,
    log_port: int,
    log_token: str,
    acme: tuple[str, int] | None = None,
) -> str:
    """haproxy.cfg for `apps`; request logs go to the driver on 127.0.0.1:`log_port`."""
    apps = sorted(apps, key=lambda a: a.app)
    longest_drain = max((a.drain_timeout for a in apps), default=0.0)
    out = [
        "# Written by conveyor's HAProxy driver from state.json; edits are overwritten.",
        "global",
        f"    stats socket {paths.admin_sock} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    log 127.0.0.1:{log_port} len 8192 format raw local0 info",
        *haproxy_flags.global_lines(),
        # An old worker after a reload lives until its requests end, at most this long.
        f"    hard-stop-after {int(max(longest_drain, 30.0)) + 30}s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        # On reload, an idle keep-alive connection of the old worker is not closed under
        # a client about to reuse it: it gets one more response, with "Connection: close".
        "    option idle-close-on-response",
        f'    log-format "{LOG_TAG} {log_token} {LOG_FIELDS}"',
        "    option forwardfor",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 10s",
        "    timeout tunnel 1h",
        # A failed connection is retried, on another server: nothing was sent yet. A
        # connection closed before any response byte (an instance that exits, a reused
        # keep-alive connection the instance had just closed) is retried for GET, HEAD and
        # OPTIONS only (see the backend). A server timeout is not retried: it would run a
        # slow request up to four times.
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
        "    http-reuse safe",
    ]
    shared: dict[tuple[str, int], list[AppState]] = {}
    for app in apps:
        if app.domains:
            shared.setdefault(shared_key(app), []).append(app)
        else:
            out += ["", *_frontend(app)]
        out += ["", *_backend(app, paths)]
    if acme is not None:
        shared.setdefault(acme, [])  # ACME answers before any app with domains is here
    backends = {a.app: backend_name(a.app) for a in apps}
    for bind, port in sorted(shared):
        group = shared[(bind, port)]
        out += [
            "",
            *shared_frontend(
                bind,
                port,
                address(bind, port),
                paths.routes(bind, port),
                before=acme_lines(paths.challenges),
                after=redirect_lines(group, backends),
            ),
        ]
    for bind, port in sorted(tls_groups(apps)):
        where = address(bind, port)
        out += ["", *tls_frontend(bind, port, where, paths.certs, paths.routes(bind, port))]
    return "\n".join(out) + "\n"


def _frontend(app: AppState) -> list[str]:
    return [
        f"frontend fe_{app.app}",
        f"    bind {address(app.bind, app.port)}",
        "    http-request set-var(txn.t0) date(0,us)",
        f"    default_backend {backend_name(app.app)}",
    ]


def _backend(app: AppState, paths: Paths) -> list[str]:
    pins_map = paths.pins_map(app.app)
    slots_map = paths.slots_map(app.app)
    previews_map = paths.previews_map(app.app)
    header = PREVIEW_HEADER.lower()
    changed = "{ var(txn.served) -m found } !{ var(txn.ck),strcmp(txn.served) eq 0 }"
    return [
        f"backend {backend_name(app.app)}",
        "    balance roundrobin",
        *strip_lines(app),
        *haproxy_flags.backend_lines(paths.maps, app.app, app.flags),
        # METH_GET is GET and HEAD; other methods may not be idempotent.
        "    http-request disable-l7-retry unless METH_GET || METH_OPTIONS",
        # Previews: the named release's slot whatever its weight, else a 503. Never another
        # release: force-persist keeps a failed connection from being redispatched.
        f"    acl preview req.fhdr({header}) -m found",
        "    force-persist if preview",
        # Stickiness per release, switched on and fed at runtime through the maps.
        f"    acl sticky str(_sticky),map({pins_map}) -m found",
        f"    http-request set-var(txn.rnd) rand({PIN_SPREAD}) if sticky || preview",
        f"    http-request set-var(txn.preview) req.fhdr({header}),concat(/,txn.rnd),"
        f"map({previews_map}) if preview",
        '    http-request return status 503 content-type "text/plain; charset=utf-8"'
        f' lf-string "release %[req.fhdr({header})] is not available on this host\\n"'
        " if preview !{ var(txn.preview) -m found }",
        "    use-server %[var(txn.preview)] if { var(txn.preview) -m found }",
        f"    http-request set-var(txn.ck) req.cook({COOKIE}) if sticky !preview",
        "    http-request set-var(txn.pin) var(txn.ck),concat(/,txn.rnd),"
        f"map({pins_map}) if sticky !preview",
        "    use-server %[var(txn.pin)] if { var(txn.pin) -m found }",
        f"    http-response set-var(txn.served) srv_name,map({slots_map}) if sticky"
        " !{ var(txn.preview) -m found }",
        f'    http-response add-header Set-Cookie "{COOKIE}=%[var(txn.served)]; Path=/; HttpOnly"'
        f" if {changed}",
        f"    http-response add-header Cache-Control private if {changed}",
        *(f"    {server_line(s)}" for s in app.slots),
    ]


def server_line(slot: Slot) -> str:
    if slot.state == "ready":
        return f"server {slot.name} {address(slot.host, slot.port)} weight {slot.weight}"
    if slot.release is None:
        return f"server {slot.name} 127.0.0.1:1 weight 1 disabled"
    return f"server {slot.name} {address(slot.host, slot.port)} weight 1 disabled"


def runtime_commands(old: AppState, new: AppState) -> tuple[list[str], list[str]]:
    """Runtime API commands taking an app's slots from `old` to `new`: those that bring
    slots up (address, weight, ready) and those that take slots down (drain, maint)."""
    be = backend_name(new.app)
    up: list[str] = []
    down: list[str] = []
    for before, after in zip(old.slots, new.slots, strict=True):
        prefix = f"set server {be}/{after.name}"
        if after.state == "ready":
            if (before.host, before.port) != (after.host, after.port):
                up.append(f"{prefix} addr {after.host} port {after.port}")
            if before.state != "ready" or before.weight != after.weight:
                up.append(f"{prefix} weight {after.weight}")
            if before.state != "ready":
                up.append(f"{prefix} state ready")
        elif after.state in ("drain", "maint") and after.state != before.state:
            down.append(f"{prefix} state {after.state}")
    return up, down


def check_listener(
    app: str,
    bind: str,
    port: int,
    apps: Mapping[str, AppState],
    current: AppState | None,
    domains: bool = False,
) -> None:
    """Refuse a public port another app has, or another process holds (`domains`: the
    app joins the shared port, which other apps with domains may already hold)."""
    wildcard = ("0.0.0.0", "::")
    if domains and shares_port(app, bind, port, apps):
        return
    for other in apps.values():
        if (
            other.app != app
            and other.port == port
            and (other.bind == bind or other.bind in wildcard or bind in wildcard)
        ):
            raise RouterError(
                f"app {app}: port {port} is already the public port of app {other.app}"
            )
    if current is not None and current.port == port:
        return  # our own listener holds it; the reload moves it
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            raise RouterError(
                f"app {app}: cannot listen on {bind}:{port}: {exc.strerror}; another "
                "process holds the port (or it needs privileges). Nothing was changed."
            ) from exc


def listener_problem(
    apps: Mapping[str, AppState],
    current: Mapping[str, AppState],
    acme: tuple[str, int] | None,
) -> str | None:
    """Why a new listener of `apps` (not in `current`) could not open, if one cannot."""
    for app in apps.values():
        old = current.get(app.app)
        if old is None or (old.bind, old.port) != (app.bind, app.port):
            if app.domains and shares_port(app.app, app.bind, app.port, current):
                continue
            if app.domains and acme == (app.bind, app.port):
                continue  # HAProxy's own, for ACME answers
            try:
                check_listener(app.app, app.bind, app.port, {}, None)
            except RouterError as exc:
                return str(exc)
    return None


def map_lines(entries: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{key} {value}\n" for key, value in entries)


def write_routes(
    apps: Iterable[AppState], paths: Paths, acme: tuple[str, int] | None = None
) -> None:
    """The route map of every shared port (each app with domains -> its backend), and the
    crt-lists of the HTTPS ones."""
    apps = list(apps)
    backends = {a.app: backend_name(a.app) for a in apps}
    for path, text in tls_files(apps, paths.certs, paths.maps, backends).items():
        write_atomic(path, text)
    if acme is not None and not paths.routes(*acme).exists():
        write_atomic(paths.routes(*acme), "")
    shared: dict[tuple[str, int], list[AppState]] = {}
    for app in apps:
        if app.domains:
            shared.setdefault(shared_key(app), []).append(app)
    for (bind, port), group in shared.items():
        names = {a.app: backend_name(a.app) for a in group}
        write_atomic(paths.routes(bind, port), map_lines(route_entries(group, names)))


def write_maps(app: AppState, paths: Paths) -> None:
    write_atomic(paths.slots_map(app.app), map_lines(slot_releases(app)))
    write_atomic(paths.pins_map(app.app), map_lines(pins(app, PIN_SPREAD)))
    write_atomic(paths.previews_map(app.app), map_lines(previews(app, PIN_SPREAD)))
    write_atomic(
        haproxy_flags.flags_map(paths.maps, app.app), map_lines(haproxy_flags.entries(app.flags))
    )


def remove_maps(app: str, paths: Paths) -> None:
    flags = haproxy_flags.flags_map(paths.maps, app)
    for path in (paths.slots_map(app), paths.pins_map(app), paths.previews_map(app), flags):
        path.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Replace a file whole (HAProxy never reads half of one), readable by us alone: the
    configuration holds the log token."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
