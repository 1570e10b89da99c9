"""Counters of the embedded router, per app and release, and their export formats."""

from __future__ import annotations

from bisect import bisect_left

from conveyor.routespec import (
    LATENCY_BUCKETS,
    AppMetrics,
    ReleaseCounters,
    RouterMetrics,
)

_NBUCKETS = len(LATENCY_BUCKETS)


class Counters:
    """Mutable counters of one release of one app; cheap to bump on every request."""

    __slots__ = (
        "buckets",
        "connect_failures",
        "errors_5xx",
        "in_flight",
        "latency_sum",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors_5xx = 0
        self.connect_failures = 0
        self.in_flight = 0
        # Non-cumulative; the last slot is the +Inf overflow.
        self.buckets = [0] * (_NBUCKETS + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, latency: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors_5xx += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum += latency

    def snapshot(self) -> ReleaseCounters:
        cumulative: list[int] = []
        total = 0
        for count in self.buckets[:_NBUCKETS]:
            total += count
            cumulative.append(total)
        return ReleaseCounters(
            requests=self.requests,
            errors_5xx=self.errors_5xx,
            connect_failures=self.connect_failures,
            in_flight=self.in_flight,
            latency_buckets=cumulative,
            latency_sum=self.latency_sum,
        )


class MetricsRegistry:
    """All counters since the router started; apps and releases are never forgotten."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.apps: dict[str, dict[str, Counters]] = {}
        # per app, per guarded flag's answer ("new-checkout=on"): kept across flag changes
        self.flags: dict[str, dict[str, Counters]] = {}

    def counters(self, app: str, release: str) -> Counters:
        releases = self.apps.get(app)
        if releases is None:
            releases = self.apps[app] = {}
        counters = releases.get(release)
        if counters is None:
            counters = releases[release] = Counters()
        return counters

    def flag_counters(self, app: str, answer: str) -> Counters:
        """The counters of one answer of a guarded flag (`name=on`, `name=off`, `name=b`)."""
        answers = self.flags.setdefault(app, {})
        counters = answers.get(answer)
        if counters is None:
            counters = answers[answer] = Counters()
        return counters

    def snapshot(self) -> RouterMetrics:
        flags = self.flags
        return RouterMetrics(
            backend="embedded",
            started_at=self.started_at,
            apps={
                app: AppMetrics(
                    app=app,
                    releases={release: c.snapshot() for release, c in releases.items()},
                    flags={k: c.snapshot() for k, c in flags.get(app, {}).items()},
                )
                for app, releases in self.apps.items()
            },
        )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(metrics: RouterMetrics, host: str | None = None) -> str:
    """The metrics in the Prometheus text exposition format (version 0.0.4).

    With `host` (the agent's name), every sample also carries a `host` label, so
    that a query can pick an environment's hosts by the names conveyor.yml uses.
    """
    extra = f',host="{_label(host)}"' if host is not None else ""
    families: list[tuple[str, str, str, list[str]]] = [
        ("conveyor_router_requests_total", "counter", "Requests answered", []),
        ("conveyor_router_errors_5xx_total", "counter", "Responses with status >= 500", []),
        (
            "conveyor_router_connect_failures_total",
            "counter",
            "Failed connections to an instance",
            [],
        ),
        ("conveyor_router_in_flight", "gauge", "Requests being answered", []),
        (
            "conveyor_router_request_duration_seconds",
            "histogram",
            "Time from request received to response completed",
            [],
        ),
    ]
    for app in metrics.apps.values():
        for release, c in app.releases.items():
            labels = f'app="{_label(app.app)}",release="{_label(release)}"{extra}'
            families[0][3].append(f"conveyor_router_requests_total{{{labels}}} {c.requests}")
            families[1][3].append(f"conveyor_router_errors_5xx_total{{{labels}}} {c.errors_5xx}")
            families[2][3].append(
                f"conveyor_router_connect_failures_total{{{labels}}} {c.connect_failures}"
            )
            families[3][3].append(f"conveyor_router_in_flight{{{labels}}} {c.in_flight}")
            hist = families[4][3]
            name = "conveyor_router_request_duration_seconds"
            for bound, count in zip(LATENCY_BUCKETS, c.latency_buckets, strict=True):
                hist.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
            hist.append(f'{name}_bucket{{{labels},le="+Inf"}} {c.requests}')
            hist.append(f"{name}_sum{{{labels}}} {c.latency_sum}")
            hist.append(f"{name}_count{{{labels}}} {c.requests}")
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"
