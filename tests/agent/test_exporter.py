"""The agent's metrics exporter: the router's counters over TCP, for Prometheus to scrape."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.agent.exporter import ExporterError, MetricsExporter, parse_address
from conveyor.agent.routing.spec import (
    LATENCY_BUCKETS,
    AppMetrics,
    ReleaseCounters,
    RouterError,
    RouterMetrics,
    RouteSpec,
)
from tests.helpers import free_port


class FakeRouter:
    """Answers metrics() with fixed counters, or fails like a router that is down."""

    name = "fake"

    def __init__(self, metrics: RouterMetrics | None) -> None:
        self._metrics = metrics

    async def start(self) -> None: ...

    async def alive(self) -> bool:
        return self._metrics is not None

    async def apply(self, spec: RouteSpec) -> None: ...

    async def remove(self, app: str) -> None: ...

    async def stop(self) -> None: ...

    async def metrics(self) -> RouterMetrics:
        if self._metrics is None:
            raise RouterError("the router does not answer on router.sock")
        return self._metrics


def _counters(requests: int, errors: int) -> ReleaseCounters:
    buckets = [min(requests, i * 10) for i in range(len(LATENCY_BUCKETS))]
    return ReleaseCounters(
        requests=requests, errors_5xx=errors, latency_buckets=buckets, latency_sum=1.5
    )


METRICS = RouterMetrics(
    backend="embedded",
    started_at=1.0,
    apps={"shop": AppMetrics(app="shop", releases={"r1": _counters(90, 3), "r2": _counters(7, 0)})},
)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        (":9101", ("0.0.0.0", 9101)),
        ("[::1]:9101", ("::1", 9101)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_address(value: str, parsed: tuple[str, int]) -> None:
    assert parse_address(value) == parsed


@pytest.mark.parametrize("value", ["9101", "127.0.0.1", "127.0.0.1:", "h:0", "h:70000", "h:x"])
def test_parse_address_refuses(value: str) -> None:
    with pytest.raises(ExporterError, match="expected ADDR:PORT"):
        parse_address(value)


async def test_metrics_are_served_with_the_host_label() -> None:
    port = free_port()
    exporter = MetricsExporter(FakeRouter(METRICS), "web-1", f"127.0.0.1:{port}")
    await exporter.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/metrics")
            again = await http.get("/metrics")  # on the same keep-alive connection
            missing = await http.get("/")
    finally:
        await exporter.close()
    assert r.status_code == 200 and again.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    labels = (("app", "shop"), ("host", "web-1"), ("release", "r1"))
    assert samples[("conveyor_router_requests_total", labels)] == 90
    assert samples[("conveyor_router_errors_5xx_total", labels)] == 3
    inf = tuple(sorted((*labels, ("le", "+Inf"))))
    assert samples[("conveyor_router_request_duration_seconds_bucket", inf)] == 90
    assert missing.status_code == 404 and "/metrics" in missing.text


async def test_a_router_that_is_down_fails_the_scrape() -> None:
    port = free_port()
    exporter = MetricsExporter(FakeRouter(None), "web-1", f"127.0.0.1:{port}")
    await exporter.start()
    try:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await exporter.close()
    assert r.status_code == 503
    assert "router metrics unavailable: the router does not answer" in r.text


async def test_a_busy_port_is_an_error_naming_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        exporter = MetricsExporter(FakeRouter(METRICS), "web-1", address)
        with pytest.raises(ExporterError, match=f"cannot listen for metrics on {address}"):
            await exporter.start()
