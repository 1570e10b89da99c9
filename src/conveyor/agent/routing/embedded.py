"""The agent's driver of the embedded router: a separate process reached on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from conveyor.agent.routing.spec import RouterError, RouterMetrics, RouteSpec

_BASE = "http://router"
_HEALTH_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n"


@functools.cache
def _unused_tls() -> ssl.SSLContext:
    """The TLS context handed to httpx, which builds one per transport otherwise.

    The admin socket speaks plain HTTP, so it is never used; but httpx's default one
    loads the CA bundle, about 30 ms of CPU, and the agent calls the router several
    times a second: that was most of an idle agent's CPU.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class EmbeddedRouter:
    """Drives `python -m conveyor.router` through its admin socket (see admin.py).

    The router process is started in its own session so that it outlives the agent:
    a restarted agent adopts the router that still answers on the socket.
    """

    name = "embedded"

    def __init__(
        self,
        socket_path: Path,
        log_path: Path,
        *,
        backend_timeout: float = 60.0,
        log_level: str = "info",
        start_timeout: float = 15.0,
        workers: int | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.backend_timeout = backend_timeout
        self.log_level = log_level
        self.start_timeout = start_timeout
        # Worker processes of the router (0: one per core); CONVEYOR_ROUTER_WORKERS by default.
        self.workers = (
            int(os.environ.get("CONVEYOR_ROUTER_WORKERS", "1")) if workers is None else workers
        )
        # The router we spawned, if any; reaped when it exits.
        self._pid: int | None = None

    # -- the admin API -----------------------------------------------------

    async def _call(
        self, method: str, path: str, *, json: Any = None, timeout: float = 10.0
    ) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path), verify=_unused_tls())
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url=_BASE, timeout=timeout
            ) as client:
                return await client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise RouterError(
                f"the router does not answer on {self.socket_path}: {exc or type(exc).__name__}"
            ) from exc

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise RouterError(message or f"router answered {response.status_code}: {response.text}")
        return body

    async def alive(self) -> bool:
        """GET /healthz answers 200 (within 2 s).

        Asked twice a second by the agent, so it is one plain HTTP/1.1 exchange on the
        socket rather than an httpx client made and torn down each time, which was most
        of an idle agent's CPU.
        """
        self._reap()
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                try:
                    writer.write(_HEALTH_REQUEST)
                    await writer.drain()
                    status = await reader.readline()
                    await reader.read()  # the rest, until the router closes (Connection: close)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        return status.startswith(b"HTTP/1.1 200 ")

    async def apply(self, spec: RouteSpec) -> None:
        self._check(await self._call("PUT", f"/apps/{spec.app}", json=spec.model_dump(mode="json")))

    async def remove(self, app: str) -> None:
        response = await self._call("DELETE", f"/apps/{app}")
        if response.status_code != 404:
            self._check(response)

    async def challenges(self, bind: str, port: int, answers: dict[str, str]) -> None:
        body = {"bind": bind, "port": port, "answers": answers}
        self._check(await self._call("PUT", "/challenges", json=body))

    async def metrics(self) -> RouterMetrics:
        return RouterMetrics.model_validate(self._check(await self._call("GET", "/metrics")))

    async def specs(self) -> dict[str, RouteSpec]:
        """The specs the router currently serves (empty after a restart)."""
        body = self._check(await self._call("GET", "/apps"))
        return {name: RouteSpec.model_validate(spec) for name, spec in body["apps"].items()}

    # -- the process -------------------------------------------------------

    async def start(self) -> None:
        if await self.alive():
            return
        self._spawn()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if await self.alive():
                return
            if self._pid is None:
                raise RouterError(f"the router exited at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise RouterError(
                    f"the router did not answer on {self.socket_path} within "
                    f"{self.start_timeout:g}s: {self._log_tail()}"
                )
            await asyncio.sleep(0.05)

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "conveyor.router",
            "--socket",
            str(self.socket_path),
            "--log-level",
            self.log_level,
            "--backend-timeout",
            str(self.backend_timeout),
            "--workers",
            str(self.workers),
        ]
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        try:
            # posix_spawn rather than Popen: the router is meant to outlive us, and a Popen
            # object of a running child complains when collected. setsid: own session,
            # like start_new_session=True, so a Ctrl-C or the agent's end does not reach it.
            self._pid = os.posix_spawn(
                sys.executable,
                argv,
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null_fd, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
                setsigdef=(signal.SIGPIPE,),
            )
        finally:
            os.close(log_fd)
            os.close(null_fd)

    def _reap(self) -> None:
        """Collect our child if it exited (no zombie left behind)."""
        if self._pid is None:
            return
        try:
            pid, _ = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            pid = self._pid
        if pid:
            self._pid = None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    async def stop(self, timeout: float = 15.0) -> None:
        """Ask the router to stop (in-flight requests finish) and wait until it is gone."""
        try:
            health = self._check(await self._call("GET", "/healthz", timeout=2.0))
        except RouterError:
            self._reap()
            return
        pid = int(health["pid"])
        with contextlib.suppress(RouterError):
            await self._call("POST", "/shutdown", timeout=2.0)
        deadline = time.monotonic() + timeout
        killed = False
        while self._running(pid):
            if time.monotonic() > deadline:
                if killed:
                    raise RouterError(f"the router (pid {pid}) does not stop")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + 5.0
            await asyncio.sleep(0.05)

    def _running(self, pid: int) -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not our child: look at it from outside
        else:
            if done and pid == self._pid:
                self._pid = None
            return not done
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # A zombie waits for its parent to collect it: it serves nothing any more.
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
