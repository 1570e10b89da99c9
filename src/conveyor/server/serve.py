"""`conveyor server`: open the store, migrate it, make the first admin token, serve."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol, runtime_checkable

import uvicorn
from sqlalchemy.exc import OperationalError

from conveyor.deploy.desired import Notifier
from conveyor.logs import setup_logging
from conveyor.server import healthlane
from conveyor.server.app import Settings, create_app
from conveyor.server.auth import ensure_admin_token
from conveyor.server.datadir import make_private
from conveyor.server.secretkey import KeyFileError, SecretStoreError, open_secret_store
from conveyor.store.cluster import Cluster
from conveyor.store.db import (
    Pool,
    SchemaTooNew,
    database_url,
    make_engine,
    migrate,
    session_factory,
    unreachable,
)
from conveyor.threads import AGENT_THREADS, BACKGROUND_THREADS

log = logging.getLogger("conveyor.server")


REQUEST_THREADS = 40  # sync routes and page renders at once (anyio's default)
SPARE_CONNECTIONS = 4  # sessions closing after their route, beside the threads


@dataclass(frozen=True)
class ServerTLS:
    """`--tls-cert`/`--tls-key`, checked (conveyor.tls.check_server_certificate)."""

    cert: Path
    key: Path
    fingerprint: str


def serve(
    data_dir: Path,
    listen: str,
    db: str | None,
    public_url: str | None,
    *,
    threads: int = REQUEST_THREADS,
    db_pool: int | None = None,
    db_wait: float = 5.0,
    tls: ServerTLS | None = None,
    forwarded_allow_ips: str | None = None,
) -> None:
    log_config = setup_logging(os.environ.get("CONVEYOR_LOG_LEVEL", "info"))
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port_text)
    url = database_url(db, data_dir)
    make_private(data_dir, url)  # before anything is created: the umask applies to it all
    # requests and the engines' background threads each get a pool as large as their
    # threads: neither can take the other's connections, and a request that finds none
    # free within db_wait gets 503 (store.db.Pool)
    request_pool = Pool(
        size=db_pool or threads + AGENT_THREADS + SPARE_CONNECTIONS,
        timeout=db_wait,
        lock_wait=db_wait,
    )
    engine = make_engine(url, request_pool)
    try:
        migrate(engine)
    except SchemaTooNew as exc:
        log.error("database schema is newer than this conveyor", extra={"error": str(exc)})
        print(f"conveyor server: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except OperationalError as exc:
        said = unreachable(engine.url.render_as_string(), exc)
        log.error("database unreachable", extra={"error": said})
        print(f"conveyor server: {said}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    sessions = session_factory(engine)
    background = session_factory(make_engine(url, Pool(size=BACKGROUND_THREADS + 2)))
    try:
        sealer = open_secret_store(data_dir, sessions, background)
    except (SecretStoreError, KeyFileError) as exc:
        print(f"conveyor server: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    with sessions() as session:
        generated = ensure_admin_token(session, os.environ.get("CONVEYOR_ADMIN_TOKEN"))
    if generated:
        # printed once, on stdout, never logged: it is not stored anywhere readable
        print(f"conveyor: admin token (shown once, keep it safe): {generated}", flush=True)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    scheme = "https" if tls else "http"
    settings = Settings(
        data_dir=data_dir,
        public_url=public_url or f"{scheme}://{shown_host}:{port}",
        public_url_given=public_url is not None,
        threads=threads,
        retry_after=max(1, round(db_wait)),
        server_fingerprint=tls.fingerprint if tls else None,
        # uvicorn's access lines, written by the app in batches (uvicorn's own: off below)
        access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
    )
    if tls:
        # on stdout for the operator: agents may pin it (--server-fingerprint)
        print(f"conveyor: TLS certificate {tls.fingerprint} ({tls.cert})", flush=True)
    cluster = None
    if engine.dialect.name == "postgresql":
        # any number of servers may share this database (README: Several servers)
        libpq = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        cluster = Cluster(libpq, settings.public_url)
    app = create_app(settings, sessions, background, cluster)
    app.state.sealer = sealer
    log.info(
        "server starting",
        extra={
            "listen": f"{host}:{port}",
            "data": str(data_dir),
            "db": engine.url.render_as_string(),
            "url": settings.public_url,
            "tls": tls.fingerprint if tls else None,
            "threads": threads,
            "db_pool": request_pool.size,
            "db_wait": db_wait,
        },
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config,
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=int(healthlane.IDLE),
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
        # X-Forwarded-Proto/-For from these proxies only (uvicorn's default: loopback)
        forwarded_allow_ips=forwarded_allow_ips,
    )
    lane = healthlane.listen(host, port, tls=tls is not None)
    _Server(config, app.state.notifier, lane).run()
    sys.stdout.flush()


@runtime_checkable
class _Transport(Protocol):
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...
    def abort(self) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, end the agents' long-polls before waiting for requests."""

    def __init__(
        self, config: uvicorn.Config, notifier: Notifier, lane: healthlane.HealthLane | None
    ) -> None:
        super().__init__(config)
        self._notifier = notifier
        self._lane = lane  # /healthz in a thread of its own, listening for uvicorn

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._lane is None:
            await super().startup(sockets)
        else:
            await healthlane.start_uvicorn(self, self._lane)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self._notifier.close)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        closer = asyncio.create_task(self._end_tls_closes()) if self.config.is_ssl else None
        if self._lane is not None:
            self._lane.stop()  # no new connection, as uvicorn closing its listener
        try:
            await super().shutdown(sockets)
        finally:
            if closer is not None:
                closer.cancel()

    async def _end_tls_closes(self) -> None:
        """Abort the TLS connections that are closing with nothing left to send.

        A TLS close waits for the client's close_notify, which an idle keep-alive client
        (an agent between two polls, a browser) never sends: the stop would wait the
        whole graceful timeout (10 s) for them.
        """
        while True:
            await asyncio.sleep(0.2)
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                if (
                    isinstance(transport, _Transport)  # asyncio's or uvloop's
                    and transport.is_closing()
                    and transport.get_write_buffer_size() == 0
                ):
                    transport.abort()
