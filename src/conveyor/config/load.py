"""The `load:` verify check: a load test whose throughput and latency are judged against
the previous release's record from the same environment (conveyor/load/)."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, field_validator

from conveyor.config.base import Section, describe, invalid
from conveyor.config.durations import PositiveDuration

_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*(s|m))?")
RATE_PATTERN = r"^\d+(\.\d+)?\s*(/\s*(s|m))?$"
MAX_RATE = 5000.0  # requests a second one load generator on the server keeps up with
MAX_DURATION = 3600.0


def parse_rate(value: object) -> float:
    """Requests a second from "200/s", "600/m" or a bare number (a second)."""
    expected = "expected a request rate like 200/s (or 600/m)"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {describe(value)}")
    if isinstance(value, int | float):
        rate = float(value)
    elif isinstance(value, str) and (m := _RATE_RE.fullmatch(value.strip())):
        rate = float(m.group(1)) / (60.0 if m.group(2) == "m" else 1.0)
    else:
        raise ValueError(f"{expected}, got {describe(value)}")
    if not math.isfinite(rate) or rate <= 0 or rate > MAX_RATE:
        raise ValueError(f"{expected}, above 0 and at most {MAX_RATE:g}/s, got {describe(value)}")
    return rate


Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    PlainSerializer(lambda r: f"{r:g}/s", return_type=str),
    WithJsonSchema({"type": ["string", "number"], "pattern": RATE_PATTERN}),
]


class LoadTest(Section):
    """Load driven from the server at every host's router: `rate` requests a second over
    `paths` (in turn) for `duration`."""

    rate: Rate = Field(description="requests a second, all hosts together, like 200/s")
    duration: PositiveDuration = Field(description="how long, like 2m")
    paths: list[str] = Field(
        default_factory=lambda: ["/"], description="GET paths, in turn. Default: [/]"
    )

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        if not paths:
            raise invalid([((), "expected at least one path, like [/]", paths)])
        for i, path in enumerate(paths):
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise invalid(
                    [
                        (
                            (i,),
                            f"expected a path starting with / like /search, got {describe(path)}",
                            path,
                        )
                    ]
                )
        return paths

    @field_validator("duration")
    @classmethod
    def _not_too_long(cls, duration: float) -> float:
        if duration > MAX_DURATION:
            raise invalid([((), "expected a duration of at most 1h, like 2m", duration)])
        return duration
