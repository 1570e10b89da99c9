"""Metric sources: where the judge's counters come from, behind one interface.

A source answers one question: the cumulative counters (requests, 5xx, latency
histogram) of some releases of an app, summed over a set of hosts, now. The
judge (judge.py) works on the growth between two readings, so a source need not
start from zero; it must only keep its figures from going backwards when a router
restarts (or say so by going backwards as a whole, which the judge reads as "all
of this is new", see window.delta).

Two sources: RouterSource (below) and PrometheusSource (prometheus.py); the
environment's `analysis.source` picks one (DeployEngine.metric_source).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from conveyor.analysis.window import combine
from conveyor.protocol import ReleaseCounters, RouterMetrics
from conveyor.threads import in_thread


class SourceError(Exception):
    """A source could not answer (unreachable, bad query): said in the step's log."""


class MetricSource(Protocol):
    """Cumulative counters per release, summed over the given hosts."""

    name: str

    async def read(
        self, app: str, releases: list[str], hosts: list[str]
    ) -> dict[str, ReleaseCounters]: ...


class RouterSource:
    """The routers' own counters, as each agent reports them with its observed state.

    Each router counts from its own start; this source adds up, per host, what
    each report grew by, so that a router restarting on one host (its counters
    back to zero) neither loses the others' history nor counts it twice.
    """

    name = "router"

    def __init__(self, observe: Callable[[list[str]], Mapping[str, RouterMetrics | None]]) -> None:
        self._observe = observe
        # (host, app, release) -> (router start time, last reading, running total)
        self._seen: dict[tuple[str, str, str], tuple[float, ReleaseCounters, ReleaseCounters]] = {}

    async def read(
        self, app: str, releases: list[str], hosts: list[str]
    ) -> dict[str, ReleaseCounters]:
        reports = await in_thread(self._observe, hosts)  # it reads the database
        out: dict[str, ReleaseCounters] = {}
        for release in releases:
            totals = []
            for host in hosts:
                metrics = reports.get(host)
                found = metrics.apps.get(app) if metrics else None
                counters = found.releases.get(release) if found else None
                key = (host, app, release)
                if counters is None or metrics is None:
                    if key in self._seen:
                        totals.append(self._seen[key][2])
                    continue
                totals.append(self._accumulate(key, metrics.started_at, counters))
            out[release] = combine(totals)
        return out

    def _accumulate(
        self, key: tuple[str, str, str], started: float, now: ReleaseCounters
    ) -> ReleaseCounters:
        before = self._seen.get(key)
        if before is None:
            total = now
        else:
            was_started, last, total = before
            restarted = started != was_started or now.requests < last.requests
            grown = now if restarted else _minus(now, last)
            total = combine([total, grown])
        self._seen[key] = (started, now, total)
        return total


def _minus(after: ReleaseCounters, before: ReleaseCounters) -> ReleaseCounters:
    return ReleaseCounters(
        requests=after.requests - before.requests,
        errors_5xx=max(0, after.errors_5xx - before.errors_5xx),
        connect_failures=max(0, after.connect_failures - before.connect_failures),
        in_flight=after.in_flight,
        latency_buckets=[
            max(0, a - b)
            for a, b in zip(after.latency_buckets, before.latency_buckets, strict=True)
        ],
        latency_sum=max(0.0, after.latency_sum - before.latency_sum),
    )
