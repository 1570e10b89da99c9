"""`conveyor agent --metrics ADDR:PORT`: the router's counters for Prometheus to scrape.

GET /metrics answers the host's router counters (either backend) in the Prometheus
text format, each sample labelled with app, release and host (the agent's name).
It lives in the agent rather than in the router so that both backends get it the
same way; while the agent restarts a scrape fails, which costs nothing, for the
counters are cumulative: the next scrape carries everything counted in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from conveyor.agent.routing.spec import Router
from conveyor.router.metrics import prometheus_text
from conveyor.tinyhttp import Reply, Request, serve_connection

log = logging.getLogger("conveyor.agent")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTER_TIMEOUT = 5.0  # seconds: a scrape fails rather than hangs on a stuck router
MAX_BODY = 64 * 1024  # a scrape sends none; a client that sends more is cut off


class ExporterError(Exception):
    """The metrics address is malformed or cannot be listened on."""


def parse_address(value: str) -> tuple[str, int]:
    """ADDR:PORT (or [IPv6]:PORT, or :PORT for every address) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ExporterError(
            f"--metrics {value!r}: expected ADDR:PORT with a port from 1 to 65535, "
            "like 127.0.0.1:9101 or :9101"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class MetricsExporter:
    """Serves GET /metrics from the router's current counters, over HTTP/1.1 on TCP."""

    def __init__(self, router: Router, host_name: str, address: str) -> None:
        self.router = router
        self.host_name = host_name
        self.address = address
        self.bind, self.port = parse_address(address)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.bind, self.port)
        except OSError as exc:
            raise ExporterError(f"cannot listen for metrics on {self.address}: {exc}") from exc
        log.info("metrics exporter listening", extra={"address": self.address})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def answer(self, method: str, target: str) -> tuple[int, str]:
        """The status and body of one request."""
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return 404, f"no such resource: {path}; Prometheus scrapes /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, f"{method} is not allowed on /metrics\n"
        try:
            metrics = await asyncio.wait_for(self.router.metrics(), ROUTER_TIMEOUT)
        except Exception as exc:
            # a failed scrape marks the series stale: better than counters that stand still
            log.warning("router metrics unavailable for a scrape", extra={"error": str(exc)})
            return 503, f"router metrics unavailable: {exc}\n"
        return 200, prometheus_text(metrics, host=self.host_name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, self._reply, MAX_BODY)

    async def _reply(self, request: Request) -> Reply:
        status, text = await self.answer(request.method, request.target)
        return Reply(status, text.encode(), CONTENT_TYPE if status == 200 else "text/plain")
