"""`analysis.source`: where the judge reads its counters, the routers or a Prometheus server."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Discriminator, Field, Tag, WithJsonSchema

from conveyor.config.base import Section, describe

PLACEHOLDERS = ("app", "releases", "hosts")

# What `conveyor agent --metrics` exports; a user's Prometheus may spell it otherwise.
_MATCH = 'app="$app",release=~"$releases",host=~"$hosts"'
DEFAULT_REQUESTS = f"sum by (release, host) (conveyor_router_requests_total{{{_MATCH}}})"
DEFAULT_ERRORS = f"sum by (release, host) (conveyor_router_errors_5xx_total{{{_MATCH}}})"
DEFAULT_LATENCY = (
    f"sum by (release, host, le) (conveyor_router_request_duration_seconds_bucket{{{_MATCH}}})"
)
_SOURCE_FORMS = (
    "expected router, or a mapping with the URL of a Prometheus server "
    "like {prometheus: http://127.0.0.1:9090}"
)


def _check_query(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a PromQL query")
    template = string.Template(value)
    unknown = [name for name in template.get_identifiers() if name not in PLACEHOLDERS]
    if unknown or not template.is_valid():
        what = f"unknown placeholder ${unknown[0]}" if unknown else "a stray $"
        raise ValueError(
            f"{what} in the query: expected $app, $releases or $hosts (write $$ for a $)"
        )
    return value


Query = Annotated[str, AfterValidator(_check_query), WithJsonSchema({"type": "string"})]


def _prometheus_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port != 0  # raises on a port that is not a number or out of range
    except ValueError:
        port_ok = False
    if not port_ok or parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(
            "expected the URL of a Prometheus server like http://127.0.0.1:9090, "
            f"got {describe(value)}"
        )
    return value


class PrometheusQueries(Section):
    """One PromQL query per metric, each answering an instant vector labelled by release.

    $app, $releases and $hosts stand for the app, and for regular expressions that
    match exactly the releases and the environment's hosts (ready for double quotes).
    A series per release and host lets conveyor tell a router's restart (its counter
    back to zero) from the others' progress.
    """

    requests: Query = Field(default=DEFAULT_REQUESTS, description="Requests answered.")
    errors: Query = Field(default=DEFAULT_ERRORS, description="Responses with status >= 500.")
    latency: Query = Field(
        default=DEFAULT_LATENCY,
        description="The latency histogram's cumulative buckets, labelled le (seconds).",
    )


class Prometheus(Section):
    """Counters read from a Prometheus server that scrapes the agents' `--metrics`."""

    prometheus: Annotated[str, AfterValidator(_prometheus_url), WithJsonSchema({"type": "string"})]
    queries: PrometheusQueries = Field(default_factory=PrometheusQueries)


def _source_form(value: Any) -> str | None:
    if value == "router":
        return "source:router"
    if isinstance(value, dict | Prometheus):
        return "source:prometheus"
    return None


MetricSourceSetting = Annotated[
    Annotated[Literal["router"], Tag("source:router")]
    | Annotated[Prometheus, Tag("source:prometheus")],
    Discriminator(
        _source_form, custom_error_type="conveyor_source", custom_error_message=_SOURCE_FORMS
    ),
]
"""`router` (the routers' own counters, as the agents report them) or a Prometheus server."""
