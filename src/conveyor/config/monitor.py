"""The `monitor:` key of an environment: the watch window after a deployment, and its holdback.

`monitor: 15m` is short for `monitor: {duration: 15m, holdback: 5%}`. During the
window the previous release, still warm, keeps `holdback` of the traffic on every
host, so that the judge compares the new release with what the previous one serves
at the same time on the same hosts (trouble shared by both cancels out); at the end
of the window the holdback goes to 0.

The share is sized when the window starts (deploy/sizing.py): raised from `holdback`
toward `holdback_max` (30% by default) so that the previous release serves 60 requests
a second of the traffic measured then, what the judge needs to catch a release turning
2 points of 5xx worse within about a minute (`make bench-judge`). `holdback_max: 5%`
(or any share at most `holdback`) keeps the share as written.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator

from conveyor.config.base import Section
from conveyor.config.durations import (
    _DURATION_SCHEMA,
    PERCENT_PATTERN,
    Duration,
    Percent,
    format_percent,
    parse_duration,
)

HOLDBACK = 0.05  # the default share of traffic the previous release keeps during the window
HOLDBACK_MAX = 0.5  # beyond half, the "new" release would not be the one serving
# the default ceiling of a holdback sized from the traffic when the window starts
HOLDBACK_SIZED_MAX = 0.3


class Monitor(Section):
    """The watch window after 100%: how long, and the previous release's share meanwhile."""

    duration: Duration = 0.0
    holdback: Percent = Field(
        default=HOLDBACK,
        description="The previous release's share of traffic during the window (whole "
        "percents, 0% to 50%); 0% compares with a window measured before the deployment. "
        "When the window starts it is raised, up to holdback_max, so that the previous "
        "release serves enough requests for the judge to catch trouble within a minute.",
    )
    holdback_max: Percent = Field(
        default=HOLDBACK_SIZED_MAX,
        description="The most the holdback is raised to from the traffic measured when the "
        "window starts (whole percents, 0% to 50%); one at most `holdback` keeps the "
        "holdback as written.",
    )

    @field_validator("holdback", "holdback_max")
    @classmethod
    def _whole_percent(cls, holdback: float) -> float:
        percent = round(holdback * 100)
        if abs(holdback * 100 - percent) > 1e-9 or holdback > HOLDBACK_MAX:
            raise ValueError(
                "expected a whole percent of traffic from 0% to 50% (routers weigh releases "
                f"in percents), like 5%, got {format_percent(holdback)}"
            )
        return percent / 100

    @property
    def holdback_weight(self) -> int:
        """The previous release's router weight during the window (percent of traffic)."""
        return round(self.holdback * 100) if self.duration > 0 else 0

    @property
    def holdback_max_weight(self) -> int:
        """The most the holdback's weight is raised to when the window starts (0: none)."""
        if self.holdback_weight == 0:
            return 0
        return max(self.holdback_weight, round(self.holdback_max * 100))

    def __bool__(self) -> bool:
        return self.duration > 0


def _shorthand(value: Any) -> Any:
    """`monitor: 15m` (or a number of seconds): the duration, with the default holdback."""
    if isinstance(value, dict | Monitor):
        return value
    return {"duration": parse_duration(value)}


MonitorSetting = Annotated[
    Monitor,
    BeforeValidator(_shorthand),
    WithJsonSchema(
        {
            "anyOf": [
                _DURATION_SCHEMA,
                {
                    "type": "object",
                    "properties": {
                        "duration": _DURATION_SCHEMA,
                        "holdback": {"type": "string", "pattern": PERCENT_PATTERN},
                        "holdback_max": {"type": "string", "pattern": PERCENT_PATTERN},
                    },
                    "additionalProperties": False,
                },
            ],
            "description": "The watch window after a deployment: a duration (15m), or "
            "{duration: 15m, holdback: 5%, holdback_max: 30%} where holdback is the previous "
            "release's share of traffic meanwhile (default 5%, 0% for none), raised when the "
            "window starts up to holdback_max (default 30%) for 60 req/s of the traffic then.",
            "examples": ["15m", {"duration": "15m", "holdback": "5%", "holdback_max": "30%"}],
        },
        mode="validation",
    ),
]
"""The `monitor:` key: a duration, or {duration, holdback}."""
