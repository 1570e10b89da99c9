"""The router's admin interface: a tiny HTTP/1.1 JSON API on a unix socket (mode 0600).

PUT    /apps/{app}          a RouteSpec: listener, targets, weights (400 bad input, 409 port in use)
DELETE /apps/{app}          stop serving an app (404 if unknown)
GET    /apps                {"apps": {app: RouteSpec}}
PUT    /challenges          {"bind", "port", "answers": {token: key authorization}}: the ACME
                            HTTP-01 answers (all of them), (bind, port) opened if need be
GET    /metrics             RouterMetrics
GET    /metrics/prometheus  the same counters in Prometheus text format
GET    /healthz             {"status": "ok", "pid": ..., "started_at": ..., "workers": N}

With several worker processes (workers.py) this API is the primary's: a change is applied
here, then in every worker, before the answer; the metrics are their sum.
POST   /shutdown            stop the router (in-flight requests finish first)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from conveyor.router.metrics import prometheus_text
from conveyor.router.proxy import ApplyError, Proxy
from conveyor.router.workers import Workers, sum_metrics
from conveyor.routespec import RouterMetrics, RouteSpec
from conveyor.tinyhttp import Reply, Request, serve_connection

log = logging.getLogger("conveyor.router")

MAX_BODY = 1024 * 1024

_JSON = "application/json"


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error as one readable line: where, and what was expected."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "invalid route spec: " + "; ".join(parts)


def _reply(status: int, body: Any, content_type: str = _JSON) -> Reply:
    """A reply whose body is JSON (or, with another content type, the text of `body`)."""
    data = json.dumps(body) if content_type == _JSON else str(body)
    return Reply(status, data.encode(), content_type)


def _error(status: int, message: str) -> Reply:
    return _reply(status, {"error": message})


class AdminServer:
    """Serves the admin API for one Proxy on a unix socket."""

    def __init__(
        self,
        proxy: Proxy,
        path: Path,
        on_shutdown: Callable[[], None],
        workers: Workers | None = None,
    ) -> None:
        self.proxy = proxy
        # The other worker processes (see workers.py): changes fan out, metrics add up.
        self.workers = workers
        # One change at a time, here and in the workers alike: they apply them in one order.
        self._changes = asyncio.Lock()
        self.path = path
        self.on_shutdown = on_shutdown
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created with no access for group and others: the umask leaves no window where
        # another user could connect before a chmod.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Only remove the socket if it is still ours (not a newer router's).
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self._answer, MAX_BODY)

    async def _answer(self, request: Request) -> Reply:
        try:
            reply = await self.dispatch(request.method, request.target, request.body)
        except Exception as exc:
            log.exception("admin request failed", extra={"target": request.target})
            reply = _error(500, f"internal error: {exc}")
        return reply

    async def dispatch(self, method: str, target: str, body: bytes) -> Reply:
        path = target.split("?", 1)[0].rstrip("/") or "/"
        proxy = self.proxy
        if path == "/healthz" and method == "GET":
            return _reply(
                200,
                {
                    "status": "ok",
                    "pid": os.getpid(),
                    "started_at": proxy.metrics.started_at,
                    "apps": len(proxy.apps),
                    "workers": 1 + (len(self.workers.sockets) if self.workers else 0),
                },
            )
        if path == "/metrics" and method == "GET":
            return _reply(200, (await self._metrics()).model_dump(mode="json"))
        if path == "/metrics/prometheus" and method == "GET":
            return _reply(
                200,
                prometheus_text(await self._metrics()),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        if path == "/apps" and method == "GET":
            specs = {name: spec.model_dump(mode="json") for name, spec in proxy.specs().items()}
            return _reply(200, {"apps": specs})
        if path == "/shutdown" and method == "POST":
            asyncio.get_running_loop().call_soon(self.on_shutdown)
            return _reply(202, {"status": "stopping"})
        if path.startswith("/apps/"):
            return await self._app_resource(method, path, body)
        if path == "/challenges" and method == "PUT":
            return await self._challenges(body)
        return _error(404, f"no such resource: {method} {path}")

    async def _metrics(self) -> RouterMetrics:
        own = self.proxy.metrics.snapshot()
        if self.workers is None:
            return own
        return sum_metrics(own, await self.workers.metrics())

    async def _fan_out(self, method: str, path: str, body: bytes = b"") -> Reply | None:
        """The change just made here, made in every worker too; an error reply if one failed."""
        if self.workers is None:
            return None
        for status, answer in await self.workers.fan_out(method, path, body):
            if status >= 400 and not (method == "DELETE" and status == 404):
                error = answer.get("error") if isinstance(answer, dict) else answer
                return _error(500, f"a worker process refused {method} {path}: {error}")
        return None

    async def _app_resource(self, method: str, path: str, body: bytes) -> Reply:
        """/apps/NAME: PUT a RouteSpec, DELETE the app, GET its spec."""
        name = path.removeprefix("/apps/")
        if not name or "/" in name:
            return _error(404, f"no such resource: {path}")
        if method == "PUT":
            async with self._changes:
                return await self._put(name, body)
        if method == "DELETE":
            async with self._changes:
                if await self.proxy.remove(name):
                    return await self._fan_out("DELETE", path) or _reply(200, {"removed": name})
            return _error(404, f"no app named {name!r} on this router")
        if method == "GET":
            spec = self.proxy.specs().get(name)
            if spec is None:
                return _error(404, f"no app named {name!r} on this router")
            return _reply(200, spec.model_dump(mode="json"))
        return _error(405, f"{method} is not allowed on {path}")

    async def _challenges(self, body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        answers = data.get("answers") if isinstance(data, dict) else None
        if (
            not isinstance(answers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in answers.items())
            or not isinstance(data.get("bind"), str)
            or not isinstance(data.get("port"), int)
        ):
            return _error(400, 'expected {"bind": ADDR, "port": N, "answers": {token: key}}')
        async with self._changes:
            try:
                await self.proxy.set_challenges(data["bind"], data["port"], answers)
            except ApplyError as exc:
                return _error(exc.status, exc.message)
            failed = await self._fan_out("PUT", "/challenges", body)
        return failed or _reply(200, {"challenges": len(answers)})

    async def _put(self, name: str, body: bytes) -> Reply:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        if not isinstance(data, dict):
            return _error(400, "the body must be a JSON object (a RouteSpec)")
        data.setdefault("app", name)
        if data["app"] != name:
            return _error(400, f"the body is for app {data['app']!r}, the path for {name!r}")
        try:
            spec = RouteSpec.model_validate(data)
        except ValidationError as exc:
            return _error(400, describe_validation(exc))
        try:
            await self.proxy.apply(spec)
        except ApplyError as exc:
            return _error(exc.status, exc.message)
        answer = spec.model_dump(mode="json")
        failed = await self._fan_out("PUT", f"/apps/{name}", json.dumps(answer).encode())
        return failed or _reply(200, answer)
