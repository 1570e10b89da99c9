"""A conveyor flag's state as the Unleash document the SDKs and the evaluator read.

A flag is on for a user when it is enabled and either the user is one of its targeted
ids, or the user satisfies every constraint and falls in the rollout percentage (hashed
by the flag's stickiness, the flag's name as the group). Variants split the users it is
on for by weight, hashed by the same stickiness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.flags import FlagChange, FlagState
from ..protocol.unleash import (
    ClientFeatures,
    Constraint,
    Feature,
    Payload,
    Strategy,
    Variant,
)

# Unleash servers send variant weights out of 1000; conveyor's percentages are scaled so
# uniformly, so that a flag reads as an Unleash server would send it.
WEIGHT_SCALE = 10


@dataclass(frozen=True)
class NamedFlag:
    name: str
    description: str
    state: FlagState


def to_feature(flag: NamedFlag) -> Feature:
    """The Unleash feature of one flag."""
    state = flag.state
    strategies = []
    if state.user_ids:
        strategies.append(
            Strategy(name="userWithId", parameters={"userIds": ",".join(state.user_ids)})
        )
    strategies.append(
        Strategy(
            name="flexibleRollout",
            parameters={
                "rollout": str(state.rollout),
                "stickiness": state.stickiness,
                "groupId": flag.name,
            },
            constraints=[Constraint.model_validate(c.model_dump()) for c in state.constraints],
        )
    )
    variants = [
        Variant(
            name=v.name,
            weight=v.weight * WEIGHT_SCALE,
            weight_type="variable",
            stickiness=state.stickiness,
            payload=Payload(type="string", value=v.payload) if v.payload is not None else None,
        )
        for v in state.variants
    ]
    return Feature(
        name=flag.name,
        description=flag.description or None,
        enabled=state.enabled,
        strategies=strategies,
        variants=variants,
    )


def to_document(flags: Iterable[NamedFlag]) -> ClientFeatures:
    """`/api/client/features` for one app and environment, flags sorted by name."""
    return ClientFeatures(
        version=2, features=[to_feature(f) for f in sorted(flags, key=lambda f: f.name)]
    )


def changed(state: FlagState, change: FlagChange) -> FlagState:
    """The state after a change: the fields it gives replace the state's."""
    given = change.model_dump(exclude_none=True)
    return FlagState.model_validate({**state.model_dump(), **given})


def describe(state: FlagState) -> str:
    """One line: on/off, rollout, targeting and variants."""
    parts = ["on" if state.enabled else "off"]
    if state.enabled:
        parts.append(f"{state.rollout}%")
        if state.stickiness != "default":
            parts.append(f"by {state.stickiness}")
    if state.user_ids:
        parts.append(f"users {','.join(state.user_ids)}")
    for c in state.constraints:
        op = ("not " if c.inverted else "") + c.operator.lower()
        parts.append(f"where {c.context_name} {op} {','.join(c.values)}")
    if state.variants:
        parts.append("variants " + " ".join(f"{v.name}={v.weight}%" for v in state.variants))
    return "  ".join(parts)
