"""`conveyor router` / `python -m conveyor.router`: the embedded router process."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from conveyor.logs import setup_logging
from conveyor.router.admin import AdminServer
from conveyor.router.proxy import Proxy
from conveyor.router.workers import Workers, die_with_parent, worker_socket

log = logging.getLogger("conveyor.router")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor router",
        description="The per-host data plane: listens on each app's public port and "
        "splits its traffic by weight; configured through an admin unix socket.",
    )
    parser.add_argument("--socket", required=True, type=Path, help="unix socket of the admin API")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--backend-timeout",
        type=float,
        default=60.0,
        help="seconds an instance may stay silent before the request gets a 504 (default 60)",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=60.0,
        help="seconds an idle client keep-alive connection is kept open (default 60)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="on SIGTERM, longest wait for in-flight requests (default 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing each public port (SO_REUSEPORT); 0 = one per core "
        "(default 1: a single process)",
    )
    return parser


def worker_count(requested: int) -> int:
    """How many processes serve traffic: `requested`, or one per core for 0."""
    if requested < 0:
        raise ValueError(f"--workers must be 0 (one per core) or more, not {requested}")
    return requested or len(os.sched_getaffinity(0)) or 1


def answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


async def serve(
    args: argparse.Namespace, *, reuse_port: bool = False, workers: Workers | None = None
) -> None:
    proxy = Proxy(
        backend_timeout=args.backend_timeout,
        client_timeout=args.client_timeout,
        reuse_port=reuse_port,
    )
    proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watch = None
    if workers is not None:
        # The primary answers on its socket only once every worker can take changes.
        await workers.ready()

        def lost(pid: int) -> None:
            log.error("a worker process exited; the router stops", extra={"worker": pid})
            stop.set()

        watch = loop.create_task(workers.watch(lost))
    admin = AdminServer(proxy, args.socket, stop.set, workers)
    await admin.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "router started",
        extra={
            "socket": str(args.socket),
            "pid": os.getpid(),
            "loop": type(loop).__module__,
            "workers": 1 + (len(workers.pids) if workers else 0),
        },
    )
    await stop.wait()
    log.info("router stopping", extra={"grace": args.shutdown_grace})
    if watch is not None:
        watch.cancel()
    await admin.close()
    if workers is not None:
        # Drains are awaited in every process before the primary exits.
        await asyncio.gather(
            proxy.shutdown(args.shutdown_grace), workers.stop(args.shutdown_grace + 5)
        )
    else:
        await proxy.shutdown(args.shutdown_grace)
    log.info("router stopped")


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at heart
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _lock(path: Path) -> int | None:
    """Hold `<socket>.lock` for the life of the process: one router per socket, even in a race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _worker(args: argparse.Namespace, index: int, lock: int) -> int:
    """A forked worker: the same proxy, its own admin socket, changes from the primary."""
    os.close(lock)
    die_with_parent()
    args.socket = worker_socket(args.socket, index)
    try:
        _run(serve(args, reuse_port=True))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("router worker failed", extra={"error": str(exc), "worker": index})
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    lock = _lock(args.socket.with_name(args.socket.name + ".lock"))
    if lock is None or answers(args.socket):
        log.error("another router already serves this socket", extra={"socket": str(args.socket)})
        return 1
    try:
        count = worker_count(args.workers)
    except ValueError as exc:
        log.error(str(exc))
        return 2
    workers = None
    if count > 1:
        pids = []
        for index in range(1, count):
            pid = os.fork()
            if pid == 0:
                os._exit(_worker(args, index, lock))
            pids.append(pid)
        workers = Workers([worker_socket(args.socket, i) for i in range(1, count)], pids)
    try:
        _run(serve(args, reuse_port=count > 1, workers=workers))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("router failed", extra={"error": str(exc)})
        return 1
    return 0
