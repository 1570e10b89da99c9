"""`conveyor server`: open the store, migrate it, make the first admin token, serve."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from conveyor.deploy.desired import Notifier
from conveyor.logs import setup_logging
from conveyor.server.app import Settings, create_app
from conveyor.server.auth import ensure_admin_token
from conveyor.server.datadir import make_private
from conveyor.server.secretkey import KeyFileError, SecretStoreError, open_secret_store
from conveyor.store.db import Pool, database_url, make_engine, migrate, session_factory
from conveyor.threads import AGENT_THREADS, BACKGROUND_THREADS

log = logging.getLogger("conveyor.server")


REQUEST_THREADS = 40  # sync routes and page renders at once (anyio's default)
SPARE_CONNECTIONS = 4  # sessions closing after their route, beside the threads


def serve(
    data_dir: Path,
    listen: str,
    db: str | None,
    public_url: str | None,
    *,
    threads: int = REQUEST_THREADS,
    db_pool: int | None = None,
    db_wait: float = 5.0,
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
    migrate(engine)
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
    settings = Settings(
        data_dir=data_dir,
        public_url=public_url or f"http://{shown_host}:{port}",
        threads=threads,
        retry_after=max(1, round(db_wait)),
    )
    app = create_app(settings, sessions, background)
    app.state.sealer = sealer
    log.info(
        "server starting",
        extra={
            "listen": f"{host}:{port}",
            "data": str(data_dir),
            "db": engine.url.render_as_string(),
            "threads": threads,
            "db_pool": request_pool.size,
            "db_wait": db_wait,
        },
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_config=log_config, timeout_graceful_shutdown=10
    )
    _Server(config, app.state.notifier).run()
    sys.stdout.flush()


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT, end the agents' long-polls before waiting for requests."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self._notifier = notifier

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self._notifier.close)
