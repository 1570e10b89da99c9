"""The `flags:` section of conveyor.yml: the feature flags an app declares."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from conveyor.config.base import Section
from conveyor.config.durations import PositiveDuration
from conveyor.flags.header import parse_source
from conveyor.protocol.flags import FLAG_NAME_PATTERN, VARIANT_TOTAL

FlagName = Annotated[str, StringConstraints(pattern=FLAG_NAME_PATTERN, max_length=255)]


class VariantDeclaration(Section):
    """A variant of a flag: its share of users (percent) and an optional payload string."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    weight: Annotated[int, Field(ge=0, le=VARIANT_TOTAL)]
    payload: str | None = None


class FlagDeclaration(Section):
    """A flag the app's code reads; it starts off in every environment."""

    name: FlagName
    description: str = ""
    variants: list[VariantDeclaration] = Field(default_factory=list)

    @field_validator("variants")
    @classmethod
    def _add_up(cls, variants: list[VariantDeclaration]) -> list[VariantDeclaration]:
        total = sum(v.weight for v in variants)
        if variants and total != VARIANT_TOTAL:
            raise ValueError(f"variant weights add up to {total}; expected {VARIANT_TOTAL}")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names repeat; expected each once")
        return variants


class Flags(Section):
    """Feature flags: declared here, switched at runtime (`conveyor flag`), never deployed."""

    declare: list[FlagDeclaration] = Field(default_factory=list)
    # each host's router evaluates the flags for each request and passes the answers to
    # the app in X-Conveyor-Flags; who the request is for comes from this cookie or header
    stickiness: str | None = None
    # a guarded rollout's step whose pause is over but whose judge has still not seen
    # enough requests with the flag on (analysis.min_requests) this long after: the
    # rollout gives up and turns the flag off (nothing vouches for it)
    give_up: PositiveDuration = 3600.0

    @field_validator("stickiness")
    @classmethod
    def _source(cls, stickiness: str | None) -> str | None:
        if stickiness is not None:
            parse_source(stickiness)
        return stickiness

    @field_validator("declare")
    @classmethod
    def _unique(cls, declare: list[FlagDeclaration]) -> list[FlagDeclaration]:
        names = [f.name for f in declare]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"flag {repeated[0]!r} is declared twice; expected each name once")
        return declare
