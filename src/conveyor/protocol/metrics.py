"""Router metrics: reported by agents, judged by the server."""

from __future__ import annotations

from pydantic import Field

from .wire import Wire

# Upper bounds (seconds) of the latency histogram buckets, shared by both backends;
# +Inf is implied by the total count.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ReleaseCounters(Wire):
    """Counters of one release on one host since the router started (monotonic)."""

    requests: int = 0
    errors_5xx: int = 0
    connect_failures: int = 0
    in_flight: int = 0
    latency_buckets: list[int] = Field(
        default_factory=lambda: [0] * len(LATENCY_BUCKETS),
        description="cumulative counts of requests with latency <= each LATENCY_BUCKETS bound",
    )
    latency_sum: float = 0.0


class AppMetrics(Wire):
    app: str
    releases: dict[str, ReleaseCounters] = {}


class RouterMetrics(Wire):
    backend: str
    started_at: float = Field(description="unix time the router process started")
    apps: dict[str, AppMetrics] = {}


# -- hosts and agents -------------------------------------------------------------
