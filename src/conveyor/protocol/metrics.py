"""Router metrics: reported by agents, judged by the server."""

from __future__ import annotations

from pydantic import Field, field_validator

from .wire import Wire

# The latency histogram's layout before issue 13: bounds 2 to 2.5 times apart. A router or
# agent one version older still reports it; ReleaseCounters converts it on arrival.
LEGACY_LATENCY_BUCKETS: tuple[float, ...] = (
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


def _fine_bounds() -> tuple[float, ...]:
    """Each legacy interval cut into equal steps on a log scale (1-2.5 in 8, 2.5-5 and 5-10
    in 6): 20 bounds a decade, about 1.122 times apart, rounded to 3 significant digits.
    The legacy bounds are among them, so a legacy histogram converts exactly onto them."""
    out: list[float] = []
    for decade in (0.001, 0.01, 0.1, 1.0):
        for low, high, steps in ((1.0, 2.5, 8), (2.5, 5.0, 6), (5.0, 10.0, 6)):
            for k in range(steps):
                out.append(float(f"{decade * low * (high / low) ** (k / steps):.3g}"))
    out.append(10.0)
    return tuple(out)


# Upper bounds (seconds) of the latency histogram buckets, shared by both backends;
# +Inf is implied by the total count. Fine enough (12% apart) to see a 20% shift of the
# p99 alone; cumulative counts, so histograms merge by addition.
LATENCY_BUCKETS: tuple[float, ...] = _fine_bounds()

# for each LATENCY_BUCKETS bound, the index of the largest legacy bound at or below it
_FROM_LEGACY = tuple(
    max(i for i, b in enumerate(LEGACY_LATENCY_BUCKETS) if b <= bound) for bound in LATENCY_BUCKETS
)


def from_legacy(cumulative: list[int]) -> list[int]:
    """Cumulative counts at LEGACY_LATENCY_BUCKETS, as counts at LATENCY_BUCKETS: a bound
    between two legacy ones takes the count at the legacy bound below it, so requests are
    counted under a bound only when the legacy histogram shows them there (latency looks a
    little worse, never better; exact at the legacy bounds)."""
    return [cumulative[i] for i in _FROM_LEGACY]


class ReleaseCounters(Wire):
    """Counters of one release on one host since the router started (monotonic)."""

    requests: int = 0
    errors_5xx: int = 0
    connect_failures: int = 0
    in_flight: int = 0
    latency_buckets: list[int] = Field(
        default_factory=lambda: [0] * len(LATENCY_BUCKETS),
        description="cumulative counts of requests with latency <= each LATENCY_BUCKETS bound "
        f"({len(LATENCY_BUCKETS)} of them; the {len(LEGACY_LATENCY_BUCKETS)} of the legacy "
        "layout are converted)",
    )
    latency_sum: float = 0.0

    @field_validator("latency_buckets")
    @classmethod
    def _layout(cls, value: list[int]) -> list[int]:
        if len(value) == len(LATENCY_BUCKETS):
            return value
        if len(value) == len(LEGACY_LATENCY_BUCKETS):
            return from_legacy(value)
        raise ValueError(
            f"expected {len(LATENCY_BUCKETS)} cumulative latency counts (or the "
            f"{len(LEGACY_LATENCY_BUCKETS)} of the legacy layout), got {len(value)}"
        )


class AppMetrics(Wire):
    app: str
    releases: dict[str, ReleaseCounters] = {}
    flags: dict[str, ReleaseCounters] = Field(
        default={},
        description="per guarded flag and its answer (`new-checkout=on`, `…=off`, `…=b`): "
        "the requests the router evaluated it for",
    )


class RouterMetrics(Wire):
    backend: str
    started_at: float = Field(description="unix time the router process started")
    apps: dict[str, AppMetrics] = {}


# -- hosts and agents -------------------------------------------------------------
