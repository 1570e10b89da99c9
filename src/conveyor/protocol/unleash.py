"""The Unleash client API's features document: what conveyor serves and evaluates.

Field names follow the Unleash wire format (camelCase on the wire, snake_case here) so
the official SDKs read what conveyor serves unchanged. The router reads the same models:
nothing here imports a server-only library.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# the constraint operators of the Unleash client specification (6.1)
OPERATORS = frozenset(
    {
        "IN",
        "NOT_IN",
        "STR_STARTS_WITH",
        "STR_ENDS_WITH",
        "STR_CONTAINS",
        "NUM_EQ",
        "NUM_GT",
        "NUM_GTE",
        "NUM_LT",
        "NUM_LTE",
        "DATE_AFTER",
        "DATE_BEFORE",
        "SEMVER_EQ",
        "SEMVER_GT",
        "SEMVER_GTE",
        "SEMVER_LT",
        "SEMVER_LTE",
        "REGEX",
        "IN_CIDR",
    }
)


class UnleashWire(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class Constraint(UnleashWire):
    context_name: str
    operator: str
    values: list[str] = Field(default_factory=list)
    value: str | None = None
    inverted: bool = False
    case_insensitive: bool = False


class Payload(UnleashWire):
    type: str
    value: str


class Override(UnleashWire):
    context_name: str
    values: list[str] = Field(default_factory=list)


class Variant(UnleashWire):
    name: str
    weight: int = 0
    weight_type: str | None = None
    stickiness: str | None = None
    payload: Payload | None = None
    overrides: list[Override] = Field(default_factory=list)


class Strategy(UnleashWire):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    constraints: list[Constraint] = Field(default_factory=list)
    segments: list[int] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)


class Dependency(UnleashWire):
    feature: str
    enabled: bool = True
    variants: list[str] = Field(default_factory=list)


class Feature(UnleashWire):
    name: str
    description: str | None = None
    type: str = "release"
    project: str = "default"
    enabled: bool = False
    stale: bool = False
    impression_data: bool = False
    strategies: list[Strategy] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    dependencies: list[Dependency] = Field(default_factory=list)


class Segment(UnleashWire):
    id: int
    name: str | None = None
    constraints: list[Constraint] = Field(default_factory=list)


class ClientFeatures(UnleashWire):
    """`GET /api/client/features`: every flag of one app and environment."""

    version: int = 2
    features: list[Feature] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
