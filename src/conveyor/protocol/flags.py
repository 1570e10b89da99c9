"""Feature flags on the wire: a flag's state per app and environment, its changes, tokens.

A flag's state is conveyor's own shape (on/off, a rollout percentage with stickiness,
targeted user ids, constraints, variants); `conveyor.flags.definition` turns it into
the Unleash document the SDKs read. Bad input is refused here, naming the problem.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from .deployments import Judgement
from .unleash import OPERATORS
from .wire import Timestamp, Wire

# Unleash's flag names: URL-safe, at most 255 characters (the store's column)
FLAG_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"
FlagName = Annotated[str, StringConstraints(pattern=FLAG_NAME_PATTERN, max_length=255)]
# variant weights are percentages: they add up to 100
VARIANT_TOTAL = 100


class FlagVariant(Wire):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    weight: Annotated[int, Field(ge=0, le=VARIANT_TOTAL, description="percent of users")]
    payload: str | None = Field(default=None, description="a string the variant carries")


def check_weights(variants: list[FlagVariant]) -> list[FlagVariant]:
    if variants:
        total = sum(v.weight for v in variants)
        if total != VARIANT_TOTAL:
            shown = " + ".join(f"{v.name} {v.weight}" for v in variants)
            raise ValueError(
                f"variant weights add up to {total} ({shown}); expected {VARIANT_TOTAL}"
            )
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat ({', '.join(names)}); expected each once")
    return variants


class FlagConstraint(Wire):
    """A condition on one context field, as Unleash writes it (operator IN, SEMVER_GT…)."""

    context_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    operator: str
    values: list[str] = Field(default_factory=list)
    inverted: bool = False
    case_insensitive: bool = False

    @field_validator("operator")
    @classmethod
    def _known(cls, operator: str) -> str:
        if operator not in OPERATORS:
            raise ValueError(
                f"unknown constraint operator {operator!r}; expected one of "
                + ", ".join(sorted(OPERATORS))
            )
        return operator

    @model_validator(mode="after")
    def _some_value(self) -> FlagConstraint:
        if not self.values:
            raise ValueError(f"constraint on {self.context_name!r} has no value")
        return self


Percentage = Annotated[int, Field(ge=0, le=100, description="percent of users, 0 to 100")]


class FlagState(Wire):
    """What a flag does in one environment; every field has the value of a new flag."""

    enabled: bool = False
    rollout: Percentage = 100
    stickiness: str = Field(default="default", description="the context field users hash by")
    user_ids: list[str] = Field(default_factory=list, description="always on for these users")
    constraints: list[FlagConstraint] = Field(default_factory=list)
    variants: list[FlagVariant] = Field(default_factory=list)

    @field_validator("variants")
    @classmethod
    def _weights(cls, variants: list[FlagVariant]) -> list[FlagVariant]:
        return check_weights(variants)


class FlagCreate(Wire):
    name: FlagName
    description: str = ""
    variants: list[FlagVariant] = Field(default_factory=list)

    @field_validator("variants")
    @classmethod
    def _weights(cls, variants: list[FlagVariant]) -> list[FlagVariant]:
        return check_weights(variants)


class FlagChange(Wire):
    """A change to a flag: only the fields given change."""

    enabled: bool | None = None
    rollout: Percentage | None = None
    stickiness: str | None = None
    user_ids: list[str] | None = None
    constraints: list[FlagConstraint] | None = None
    variants: list[FlagVariant] | None = None

    @field_validator("variants")
    @classmethod
    def _weights(cls, variants: list[FlagVariant] | None) -> list[FlagVariant] | None:
        return None if variants is None else check_weights(variants)


class FlagOut(Wire):
    app: str
    environment: str
    name: str
    description: str = ""
    declared: bool = Field(description="declared in the app's conveyor.yml")
    state: FlagState
    updated_at: Timestamp | None = None
    updated_by: str | None = None


class FlagChangeOut(Wire):
    """One entry of a flag's history: who changed it, when, from what to what."""

    at: Timestamp
    by: str
    before: FlagState | None
    after: FlagState
    note: str | None = Field(
        default=None, description="why, for a guarded rollout's change (the judge's evidence)"
    )


# a step lasts at least a second and at most a day
MIN_STEP_PAUSE = 1.0
MAX_STEP_PAUSE = 86400.0


class GuardedRolloutStart(Wire):
    """A guarded rollout: the percentages to go through, and how long each step lasts."""

    steps: list[Percentage] = Field(description="rising percentages, e.g. [5, 25, 50, 100]")
    step_pause: float = Field(description="seconds each step lasts at least (judged meanwhile)")

    @field_validator("steps")
    @classmethod
    def _rising(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("no steps; expected rising percentages like 5,25,50,100")
        if any(b <= a for a, b in pairwise(steps)) or steps[0] <= 0:
            shown = ",".join(map(str, steps))
            raise ValueError(f"steps {shown} do not rise; expected e.g. 5,25,50,100")
        return steps

    @field_validator("step_pause")
    @classmethod
    def _pause(cls, pause: float) -> float:
        if not MIN_STEP_PAUSE <= pause <= MAX_STEP_PAUSE:
            raise ValueError(
                f"step pause {pause:g} s is outside 1 s to 1 day; expected e.g. 600 (10m)"
            )
        return pause


class GuardedRolloutOut(Wire):
    """A guarded rollout as it stands: its step and the judge's last word."""

    id: int
    steps: list[int]
    step_pause: float
    step: int = Field(description="index of the current step in `steps`")
    step_started_at: Timestamp
    state: str = Field(description="running | completed | stopped | gave_up | cancelled")
    judgement: Judgement | None = None
    reason: str | None = None
    started_by: str
    started_at: Timestamp
    ended_at: Timestamp | None = None


class FlagDetail(FlagOut):
    history: list[FlagChangeOut] = Field(default_factory=list)
    rollout: GuardedRolloutOut | None = Field(
        default=None, description="the flag's last guarded rollout, if any"
    )


class FlagTokenCreate(Wire):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class FlagTokenCreated(Wire):
    """A client token for the Unleash SDKs of one app and environment (shown once)."""

    id: int
    name: str
    app: str
    environment: str
    token: str
