"""The Prometheus source: queries built, answers parsed, counters kept across router restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from conveyor.analysis.prometheus import (
    Labels,
    PrometheusSource,
    RunningTotals,
    buckets,
    counters,
    parse_vector,
    render,
)
from conveyor.analysis.sources import SourceError
from conveyor.config.metric_source import DEFAULT_LATENCY, DEFAULT_REQUESTS
from conveyor.protocol import LATENCY_BUCKETS, LEGACY_LATENCY_BUCKETS, ReleaseCounters

URL = "http://prom.test:9090"


@pytest.mark.parametrize(
    ("query", "app", "releases", "hosts", "rendered"),
    [
        (
            DEFAULT_REQUESTS,
            "shop",
            ["abc1234-1", "def5678-2"],
            ["web-1", "web-2"],
            "sum by (release, host) (conveyor_router_requests_total"
            '{app="shop",release=~"abc1234-1|def5678-2",host=~"web-1|web-2"})',
        ),
        (
            DEFAULT_LATENCY,
            "shop",
            ["r1"],
            ["web-1"],
            "sum by (release, host, le) (conveyor_router_request_duration_seconds_bucket"
            '{app="shop",release=~"r1",host=~"web-1"})',
        ),
        # a dot is a regex wildcard: escaped, and the backslash doubled for the PromQL string
        ('x{host=~"$hosts"}', "a", [], ["web.eu-1"], 'x{host=~"web\\\\.eu-1"}'),
        ('x{app="$app",r=~"${releases}"}', 'we"ird', ["r+1"], [], 'x{app="we\\"ird",r=~"r\\\\+1"}'),
        ("sum(x) * 0 + $$5", "a", [], [], "sum(x) * 0 + $5"),
    ],
)
def test_render(query: str, app: str, releases: list[str], hosts: list[str], rendered: str) -> None:
    assert render(query, app, releases, hosts) == rendered


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1700000000.0, v]} for m, v in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (vector(), {}),
        (
            vector(({"release": "r1", "host": "web-1"}, "12"), ({"release": "r2"}, "3.0")),
            {(("host", "web-1"), ("release", "r1")): 12.0, (("release", "r2"),): 3.0},
        ),
        # a query keeping __name__ (no aggregation) is the same series
        (vector(({"__name__": "x", "release": "r1"}, "4")), {(("release", "r1"),): 4.0}),
        (vector(({"release": "r1"}, "NaN")), {}),
    ],
)
def test_parse_vector(body: Any, parsed: dict[Labels, float]) -> None:
    assert parse_vector(body, "the query") == parsed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"},
            "the query failed (bad_data: 1:5: parse error)",
        ),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "the query answered matrix: expected an instant vector",
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}, "scalar"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
            "answered a sample it cannot read",
        ),
        ([1, 2], "the query failed (error: [1, 2])"),
    ],
)
def test_parse_vector_refuses(body: Any, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_vector(body, "the query")
    assert message in str(caught.value)


A: Labels = (("host", "web-1"), ("release", "r1"))
B: Labels = (("host", "web-2"), ("release", "r1"))


@pytest.mark.parametrize(
    ("answers", "totals"),
    [
        ([{A: 10}, {A: 25}, {A: 25}], {A: 25}),
        # web-1's router restarted between the looks: all of its 4 is new
        ([{A: 100, B: 50}, {A: 4, B: 80}], {A: 104, B: 80}),
        # ... and keeps counting from there
        ([{A: 100}, {A: 4}, {A: 10}], {A: 110}),
        # a series missing from an answer (target down, stale) keeps its total
        ([{A: 10, B: 5}, {A: 20}, {A: 30, B: 7}], {A: 30, B: 7}),
        # ... and if it comes back from a restarted router, its new count is growth
        ([{A: 10, B: 5}, {A: 20}, {A: 30, B: 2}], {A: 30, B: 7}),
    ],
)
def test_running_totals(answers: list[dict[Labels, float]], totals: dict[Labels, float]) -> None:
    running = RunningTotals()
    for answer in answers:
        found = running.update(answer)
    assert found == totals


def cumulative(counts: dict[float, int]) -> list[int]:
    """LATENCY_BUCKETS counts from a few bounds: each bound takes the last one at or below it."""
    out, last = [], 0
    for bound in LATENCY_BUCKETS:
        last = counts.get(bound, last)
        out.append(last)
    return out


@pytest.mark.parametrize(
    ("by_bound", "requests", "expected"),
    [
        ({b: 10 for b in LATENCY_BUCKETS}, 10, [10] * len(LATENCY_BUCKETS)),
        ({}, 0, [0] * len(LATENCY_BUCKETS)),
        # a coarser histogram: bounds it lacks take the bucket below (latency looks worse)
        ({0.1: 5.0, 1.0: 9.0}, 10, cumulative({0.1: 5, 1.0: 9})),
        # written 1e-3 instead of 0.001, and a bucket from a later scrape than the requests
        ({1e-3: 3.0, 0.0025: 12.0}, 10, cumulative({0.001: 3, 0.0025: 10})),
    ],
)
def test_buckets(by_bound: dict[float, float], requests: int, expected: list[int]) -> None:
    assert buckets(by_bound, requests) == expected


WHAT = {"requests": "requests q", "errors": "errors q", "latency": "latency q"}


def totals_of(release: str, requests: int, errors: int, host: str = "web-1") -> Any:
    labels = (("host", host), ("release", release))
    return {
        "requests": {labels: requests},
        "errors": {labels: errors},
        "latency": {(*labels, ("le", le)): requests for le in ("0.005", "0.01", "10.0", "+Inf")},
    }


def test_counters_sum_the_hosts_per_release() -> None:
    one, two = totals_of("r1", 100, 5), totals_of("r1", 50, 1, host="web-2")
    merged = {kind: {**one[kind], **two[kind]} for kind in one}
    found = counters(merged, ["r1", "r2"], WHAT)
    assert found["r1"].requests == 150 and found["r1"].errors_5xx == 6
    assert found["r1"].latency_buckets[LATENCY_BUCKETS.index(0.005)] == 150
    assert found["r1"].latency_buckets[LATENCY_BUCKETS.index(0.0025)] == 0
    assert found["r2"] == ReleaseCounters()  # no traffic yet


def test_counters_read_each_hosts_own_bounds_before_adding_them() -> None:
    """One host exports the finer bounds, another (an agent one version older) the legacy
    ones: added up per `le`, the finer bounds would miss the legacy host's requests."""
    fine = totals_of("r1", 100, 0)
    fine["latency"] = {
        (("host", "web-1"), ("release", "r1"), ("le", str(b))): 100.0 if b >= 0.0112 else 0.0
        for b in LATENCY_BUCKETS
    }
    legacy = totals_of("r1", 50, 0, host="web-2")
    legacy["latency"] = {
        (("host", "web-2"), ("release", "r1"), ("le", str(b))): 50.0 if b >= 0.01 else 0.0
        for b in LEGACY_LATENCY_BUCKETS
    }
    merged = {kind: {**fine[kind], **legacy[kind]} for kind in fine}
    found = counters(merged, ["r1"], WHAT)["r1"]
    assert found.latency_buckets[LATENCY_BUCKETS.index(0.01)] == 50
    assert found.latency_buckets[LATENCY_BUCKETS.index(0.0112)] == 150
    assert found.latency_buckets[LATENCY_BUCKETS.index(0.0126)] == 150


@pytest.mark.parametrize(
    ("totals", "message"),
    [
        (
            {"requests": {(("host", "web-1"),): 5}, "errors": {}, "latency": {}},
            'requests q answered a series without a release label: {host="web-1"}',
        ),
        (
            {**totals_of("r1", 5, 0), "latency": {(("release", "r1"),): 5}},
            "latency q answered a series without a le label",
        ),
        (
            {**totals_of("r1", 5, 0), "latency": {}},
            "latency q answered no bucket for release r1, which has 5 requests",
        ),
        (
            {**totals_of("r1", 5, 0), "latency": {(("le", "fast"), ("release", "r1")): 5}},
            "latency q answered a bucket with le='fast'",
        ),
    ],
)
def test_counters_refuse_answers_without_the_labels_they_need(totals: Any, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        counters(totals, ["r1"], WHAT)
    assert message in str(caught.value)


class FakePrometheus:
    """Answers the default queries from exporter-like counters per (release, host)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], tuple[int, int]] = {}  # requests, 5xx
        self.seen: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.seen.append(params)
        query = params["query"]
        samples = []
        for (release, host), (requests, errors) in self.counts.items():
            labels = {"release": release, "host": host}
            if "requests_total" in query:
                samples.append((labels, str(requests)))
            elif "errors_5xx_total" in query:
                samples.append((labels, str(errors)))
            else:
                samples += [({**labels, "le": "0.01"}, str(requests))]
                samples += [({**labels, "le": "+Inf"}, str(requests))]
        return httpx.Response(200, json=vector(*samples))


def test_the_source_reads_three_queries_at_one_moment_across_a_router_restart() -> None:
    prometheus = FakePrometheus()
    source = PrometheusSource(URL + "/", transport=httpx.MockTransport(prometheus))

    def read() -> dict[str, ReleaseCounters]:
        return asyncio.run(source.read("shop", ["r1", "r2"], ["web-1", "web-2"]))

    prometheus.counts = {
        ("r1", "web-1"): (100, 2),
        ("r1", "web-2"): (80, 1),
        ("r2", "web-1"): (7, 0),
    }
    first = read()
    assert (first["r1"].requests, first["r1"].errors_5xx, first["r2"].requests) == (180, 3, 7)
    assert len({p["time"] for p in prometheus.seen}) == 1  # one moment for the three
    assert 'host=~"web-1|web-2"' in prometheus.seen[0]["query"]
    # web-1's router restarted (its counters from zero) while web-2 went on
    prometheus.counts = {
        ("r1", "web-1"): (10, 1),
        ("r1", "web-2"): (90, 1),
        ("r2", "web-1"): (1, 0),
    }
    second = read()
    assert (second["r1"].requests, second["r1"].errors_5xx) == (200, 4)
    assert second["r2"].requests == 8
    assert second["r1"].latency_buckets[LATENCY_BUCKETS.index(0.01)] == 200


def test_queries_can_be_overridden() -> None:
    prometheus = FakePrometheus()
    queries = {"requests": 'sum by (release) (http_requests_total{job="$app"})'}
    source = PrometheusSource(URL, queries, transport=httpx.MockTransport(prometheus))
    asyncio.run(source.read("shop", ["r1"], ["web-1"]))
    sent = [p["query"] for p in prometheus.seen]
    assert sent[0] == 'sum by (release) (http_requests_total{job="shop"})'
    assert "conveyor_router_errors_5xx_total" in sent[1]  # the others keep their defaults


def answering(response: httpx.Response | Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(response, Exception):
            raise response
        return response

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        (
            answering(httpx.ConnectError("connection refused")),
            "to Prometheus at http://prom.test:9090: Prometheus is unreachable "
            "(ConnectError: connection refused)",
        ),
        (
            answering(
                httpx.Response(
                    400,
                    json={"status": "error", "errorType": "bad_data", "error": "parse error"},
                )
            ),
            "failed (bad_data: parse error)",
        ),
        (answering(httpx.Response(502, text="<html>Bad Gateway</html>")), "got HTTP 502, not a"),
        (answering(httpx.ReadTimeout("slow")), "Prometheus did not answer within 5 s"),
    ],
)
def test_errors_name_the_query_and_the_server(transport: httpx.MockTransport, message: str) -> None:
    source = PrometheusSource(URL, transport=transport)
    with pytest.raises(SourceError) as caught:
        asyncio.run(source.read("shop", ["r1"], ["web-1"]))
    text = str(caught.value)
    assert message in text
    assert text.startswith("the requests query 'sum by (release, host) (conveyor_router_")


def test_a_failed_read_counts_nothing() -> None:
    prometheus = FakePrometheus()
    prometheus.counts = {("r1", "web-1"): (100, 2)}
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 3:  # the latency query of the first read
            return httpx.Response(503, json={"status": "error", "error": "busy"})
        return prometheus(request)

    source = PrometheusSource(URL, transport=httpx.MockTransport(flaky))
    with pytest.raises(SourceError, match="busy"):
        asyncio.run(source.read("shop", ["r1"], ["web-1"]))
    # had the failed read kept its requests and errors, 5 would read as a restart: 105
    prometheus.counts = {("r1", "web-1"): (5, 0)}
    assert asyncio.run(source.read("shop", ["r1"], ["web-1"]))["r1"].requests == 5
