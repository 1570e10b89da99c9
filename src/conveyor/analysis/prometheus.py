"""The Prometheus metric source: the judge's counters from PromQL instant queries.

Three queries (requests, 5xx, the latency histogram's buckets; see
config/metric_source.py for the defaults, which match `conveyor agent --metrics`)
are evaluated at one moment through `GET /api/v1/query`, each answering an instant
vector labelled by release (and `le` for the buckets).

Counters start again from zero when a router restarts, and a plain `sum` over the
hosts would then go backwards by that host's history while the others go on:
the judge would read a smaller or a wrong window. So, like RouterSource, this
source keeps a running total per series it is answered (one per release and host
with the default queries): a series that went down restarted, and all of its
new value is growth. A series missing from an answer (its target down, or stale)
keeps the total it had. A query that sums over the hosts still works, but a
restart of one host then counts the others' history again for one window.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from string import Template
from typing import Any

import httpx

from conveyor.analysis.sources import SourceError
from conveyor.config.metric_source import DEFAULT_ERRORS, DEFAULT_LATENCY, DEFAULT_REQUESTS
from conveyor.protocol import LATENCY_BUCKETS, ReleaseCounters
from conveyor.tls import client_tls

KINDS = ("requests", "errors", "latency")
TIMEOUT = 5.0  # seconds per query: a step waits for the next look rather than hang
KEEP_QUERIES = 64  # running totals of this many rendered queries (releases and hosts sets)

Labels = tuple[tuple[str, str], ...]  # a series' labels, sorted, without __name__

_REGEX_SPECIAL = set(r"\.+*?()|[]{}^$")


def _regex(names: Iterable[str]) -> str:
    """A regular expression matching exactly these names (PromQL anchors it)."""
    return "|".join("".join("\\" + c if c in _REGEX_SPECIAL else c for c in n) for n in names)


def _quoted(text: str) -> str:
    """text as it must be written between double quotes in PromQL."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(query: str, app: str, releases: list[str], hosts: list[str]) -> str:
    """A configured query with $app, $releases and $hosts filled in."""
    return Template(query).substitute(
        app=_quoted(app), releases=_quoted(_regex(releases)), hosts=_quoted(_regex(hosts))
    )


def parse_vector(body: Any, what: str) -> dict[Labels, float]:
    """The samples of a /api/v1/query answer (an instant vector), by their labels."""
    if not isinstance(body, dict) or body.get("status") != "success":
        kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
        detail = body.get("error", "no reason given") if isinstance(body, dict) else repr(body)
        raise SourceError(f"{what} failed ({kind}: {detail})")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        found = data.get("resultType") if isinstance(data, dict) else None
        raise SourceError(
            f"{what} answered {found or 'no result'}: expected an instant vector "
            "(a query per series, without a [range])"
        )
    out: dict[Labels, float] = {}
    for sample in data.get("result") or []:
        try:
            metric, (_, value) = sample["metric"], sample["value"]
            labels = tuple(sorted((k, str(v)) for k, v in metric.items() if k != "__name__"))
            number = float(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{what} answered a sample it cannot read: {sample!r}") from exc
        if not math.isfinite(number):
            continue  # NaN (a division by zero in a user's query): no count to add
        out[labels] = out.get(labels, 0.0) + number
    return out


class RunningTotals:
    """Per series of one query, its total growth since first seen, across counter resets."""

    def __init__(self) -> None:
        self._last: dict[Labels, float] = {}
        self.totals: dict[Labels, float] = {}

    def update(self, answer: Mapping[Labels, float]) -> dict[Labels, float]:
        for labels, value in answer.items():
            last = self._last.get(labels)
            if last is None:
                self.totals[labels] = value
            else:
                # gone down: the router restarted, and everything it counted since is new
                self.totals[labels] += value - last if value >= last else value
            self._last[labels] = value
        return self.totals


def _release(labels: Labels, what: str, name: str = "release") -> str:
    for key, value in labels:
        if key == name:
            return value
    shown = "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
    raise SourceError(f"{what} answered a series without a {name} label: {shown}")


def buckets(by_bound: Mapping[float, float], requests: int) -> list[int]:
    """Cumulative counts at each LATENCY_BUCKETS bound, from a histogram's `le` buckets.

    A bound the histogram lacks takes the count of its largest bucket below: requests
    are counted under a bound only when the histogram shows them there, so a coarser
    histogram makes latency look worse, never better.
    """
    known = sorted((le, count) for le, count in by_bound.items())
    out: list[int] = []
    for bound in LATENCY_BUCKETS:
        below = [count for le, count in known if le <= bound * (1 + 1e-9)]
        # a bucket read from a later scrape than the requests may be ahead of them
        out.append(min(round(below[-1]), requests) if below else 0)
    return out


def _summed(series: Mapping[Labels, Mapping[float, float]], requests: int) -> list[int]:
    total = [0] * len(LATENCY_BUCKETS)
    for by_bound in series.values():
        total = [a + b for a, b in zip(total, buckets(by_bound, requests), strict=True)]
    return [min(count, requests) for count in total]


def counters(
    totals: Mapping[str, Mapping[Labels, float]], releases: list[str], what: Mapping[str, str]
) -> dict[str, ReleaseCounters]:
    """ReleaseCounters per release from the totals per series of the three queries."""
    sums: dict[str, dict[str, float]] = {kind: {} for kind in ("requests", "errors")}
    # per series (a host's, with the default query): hosts may export different bounds (an
    # agent one version older the legacy ones), so each is read onto LATENCY_BUCKETS alone
    by_le: dict[str, dict[Labels, dict[float, float]]] = {}
    for kind in ("requests", "errors"):
        for labels, value in totals[kind].items():
            release = _release(labels, what[kind])
            sums[kind][release] = sums[kind].get(release, 0.0) + value
    for labels, value in totals["latency"].items():
        release = _release(labels, what["latency"])
        le = _release(labels, what["latency"], "le")
        try:
            bound = float(le)
        except ValueError:
            raise SourceError(f"{what['latency']} answered a bucket with le={le!r}") from None
        if not math.isinf(bound):
            series = tuple((k, v) for k, v in labels if k != "le")
            found = by_le.setdefault(release, {}).setdefault(series, {})
            found[bound] = found.get(bound, 0.0) + value
    out: dict[str, ReleaseCounters] = {}
    for release in releases:
        requests = round(sums["requests"].get(release, 0.0))
        if requests > 0 and release not in by_le:
            raise SourceError(
                f"{what['latency']} answered no bucket for release {release}, which has "
                f"{requests} requests: the judge needs its latency histogram"
            )
        out[release] = ReleaseCounters(
            requests=requests,
            errors_5xx=min(round(sums["errors"].get(release, 0.0)), requests),
            latency_buckets=_summed(by_le.get(release, {}), requests),
        )
    return out


class PrometheusSource:
    """Cumulative counters per release, from PromQL instant queries to a Prometheus server."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        queries: Mapping[str, str] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        defaults = {"requests": DEFAULT_REQUESTS, "errors": DEFAULT_ERRORS}
        self.queries = {"latency": DEFAULT_LATENCY, **defaults, **(queries or {})}
        self._transport = transport  # tests answer without a server
        self._totals: OrderedDict[tuple[str, str], RunningTotals] = OrderedDict()

    async def read(
        self, app: str, releases: list[str], hosts: list[str]
    ) -> dict[str, ReleaseCounters]:
        rendered = {kind: render(self.queries[kind], app, releases, hosts) for kind in KINDS}
        what = {
            kind: f"the {kind} query {q!r} to Prometheus at {self.url}"
            for kind, q in rendered.items()
        }
        at = time.time()  # one moment for the three, so they read the same scrapes
        async with httpx.AsyncClient(
            timeout=TIMEOUT, transport=self._transport, verify=client_tls()
        ) as http:
            answers = {
                kind: await self._query(http, rendered[kind], at, what[kind]) for kind in KINDS
            }
        totals = {kind: self._running(kind, rendered[kind]).update(answers[kind]) for kind in KINDS}
        return counters(totals, releases, what)

    async def _query(
        self, http: httpx.AsyncClient, query: str, at: float, what: str
    ) -> dict[Labels, float]:
        try:
            r = await http.get(f"{self.url}/api/v1/query", params={"query": query, "time": at})
        except httpx.TimeoutException as exc:
            raise SourceError(f"{what}: Prometheus did not answer within {TIMEOUT:g} s") from exc
        except httpx.HTTPError as exc:
            raise SourceError(
                f"{what}: Prometheus is unreachable ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            body = r.json()
        except ValueError:
            raise SourceError(
                f"{what} got HTTP {r.status_code}, not a Prometheus answer: {r.text[:200]!r}"
            ) from None
        return parse_vector(body, what)

    def _running(self, kind: str, query: str) -> RunningTotals:
        key = (kind, query)
        found = self._totals.get(key)
        if found is None:
            found = self._totals[key] = RunningTotals()
            while len(self._totals) > KEEP_QUERIES * len(KINDS):
                self._totals.popitem(last=False)
        self._totals.move_to_end(key)
        return found


__all__ = [
    "Labels",
    "PrometheusSource",
    "RunningTotals",
    "buckets",
    "counters",
    "parse_vector",
    "render",
]
