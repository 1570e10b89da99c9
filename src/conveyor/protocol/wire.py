"""The base of every wire model and the constrained types they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer

Role = Literal["viewer", "deployer", "admin", "runner"]
RunState = Literal["queued", "running", "succeeded", "failed", "superseded", "cancelled"]
StepState = Literal[
    "pending", "running", "succeeded", "failed", "skipped", "cancelled", "interrupted"
]


# A request naming a release in this header reaches that release's instance on a host's
# router whatever its weight (0 included): how a deployment checks a release before users
# see it. The controller sends it, both router backends honour it; an unknown release is a
# 503, never another release.
PREVIEW_HEADER = "X-Conveyor-Release"


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


# The largest integer a database column holds (SQLite's and PostgreSQL's bigint): ids,
# offsets and generations above it are refused at the edge, never overflow in a query.
MAX_INT = 2**63 - 1
# The largest value of an Integer column (record ids, generations): PostgreSQL's `integer`
# (SQLite's hold more, but a store may move from one engine to the other)
MAX_RECORD_INT = 2**31 - 1


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _aware_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A moment in UTC: naive in Python (as the database stores it), with its zone on the wire
# ("2026-12-05T20:34:01Z"), so that it is an RFC 3339 `date-time` every client can read.
Timestamp = Annotated[
    datetime,
    AfterValidator(_naive_utc),
    PlainSerializer(_aware_utc, return_type=datetime, when_used="json"),
]


MAX_REPO = 4096  # a URL or a path (PATH_MAX)
MAX_POLL = 7 * 24 * 3600  # a week, in seconds
MAX_BRANCH = 255 - len("refs/heads/")  # its ref fits the 255 characters a run records
# a repository: any URL or path git takes, but no control character (none survives argv)
REPO_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# a branch name: none of what git refuses in a ref (space, control characters, ~^:?*[\)
BRANCH_PATTERN = r"^[^\x00-\x20\x7f~^:?*\[\\]+$"
