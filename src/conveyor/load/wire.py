"""What the server and its load-generating child process say to each other (JSON lines)."""

from __future__ import annotations

from bisect import bisect_left

from pydantic import BaseModel, Field

from conveyor.protocol.metrics import LATENCY_BUCKETS, ReleaseCounters


class LoadPlan(BaseModel):
    """One load test: `rate` requests a second spread over `targets` x `paths`."""

    targets: list[str] = Field(min_length=1)  # base URLs, one per host's router
    paths: list[str] = Field(min_length=1)
    rate: float
    duration: float
    host_header: str | None = None
    request_timeout: float = 10.0


class LoadSample(BaseModel):
    """Cumulative counters `at` seconds after the load began (one line every second)."""

    at: float
    counters: ReleaseCounters


class LoadSummary(BaseModel):
    """The engine's own account at the end: what the server records besides the counters."""

    requests: int
    failures: int
    seconds: float
    rate: float  # requests a second achieved
    p50: float | None  # seconds, from the engine's own statistics
    p95: float | None
    p99: float | None
    errors: dict[str, int] = {}  # the first kinds of failure, with their counts


class Counting:
    """Cumulative counters in the routers' layout (LATENCY_BUCKETS), so that the judge
    reads a load test's latencies exactly as it reads a canary's."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.within = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0

    def add(self, seconds: float, failed: bool) -> None:
        self.requests += 1
        self.errors += failed
        self.latency_sum += seconds
        first = bisect_left(LATENCY_BUCKETS, seconds)
        for i in range(first, len(LATENCY_BUCKETS)):
            self.within[i] += 1

    def counters(self) -> ReleaseCounters:
        return ReleaseCounters(
            requests=self.requests,
            errors_5xx=self.errors,
            latency_buckets=list(self.within),
            latency_sum=self.latency_sum,
        )
