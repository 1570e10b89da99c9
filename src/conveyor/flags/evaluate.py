"""One app and environment's flags, evaluated for a context as the Unleash SDKs do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.unleash import ClientFeatures, Constraint, Feature, Payload, Strategy, Variant
from .constraints import all_satisfied
from .context import Context, Random, random_stickiness
from .strategies import activates
from .variants import select


@dataclass(frozen=True)
class VariantResult:
    """A flag's variant for one context, in the shape the SDKs return."""

    name: str
    enabled: bool
    feature_enabled: bool
    payload: Payload | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "enabled": self.enabled}
        if self.payload is not None:
            out["payload"] = self.payload.model_dump()
        out["feature_enabled"] = self.feature_enabled
        return out


def _chosen(variant: Variant) -> VariantResult:
    return VariantResult(variant.name, True, True, variant.payload)


_OFF = VariantResult("disabled", False, False)
_ON_WITHOUT_VARIANT = VariantResult("disabled", False, True)


class FlagSet:
    """The flags of a features document, ready to answer `is_enabled` and `variant`."""

    def __init__(self, document: ClientFeatures, rng: Random = random_stickiness) -> None:
        self.document = document
        self.features = {f.name: f for f in document.features}
        self.segments = {s.id: s.constraints for s in document.segments}
        self.rng = rng

    def _constraints(self, strategy: Strategy) -> list[Constraint] | None:
        """The strategy's constraints with its segments'; None if a segment is unknown."""
        constraints = list(strategy.constraints)
        for segment in strategy.segments:
            if segment not in self.segments:
                return None
            constraints.extend(self.segments[segment])
        return constraints

    def _strategy_on(self, feature: Feature, strategy: Strategy, context: Context) -> bool:
        constraints = self._constraints(strategy)
        if constraints is None or not all_satisfied(constraints, context):
            return False
        group = str(strategy.parameters.get("groupId") or feature.name)
        return activates(strategy.name, strategy.parameters, context, group, self.rng)

    def _winning(self, feature: Feature, context: Context) -> tuple[bool, Strategy | None]:
        """Whether the flag is on, and the first strategy that turned it on."""
        if not feature.enabled or not self._parents_satisfied(feature, context):
            return False, None
        if not feature.strategies:
            return True, None
        for strategy in feature.strategies:
            if self._strategy_on(feature, strategy, context):
                return True, strategy
        return False, None

    def _parents_satisfied(self, feature: Feature, context: Context) -> bool:
        for dependency in feature.dependencies:
            parent = self.features.get(dependency.feature)
            # one level only: a parent with parents of its own is never satisfied
            if parent is None or parent.dependencies:
                return False
            if not dependency.enabled:
                if self.is_enabled(parent.name, context):
                    return False
            elif dependency.variants:
                variant = self.variant(parent.name, context)
                if not variant.feature_enabled or variant.name not in dependency.variants:
                    return False
            elif not self.is_enabled(parent.name, context):
                return False
        return True

    def is_enabled(self, name: str, context: Context) -> bool:
        """Whether flag `name` is on for this context; an unknown flag is off."""
        feature = self.features.get(name)
        return feature is not None and self._winning(feature, context)[0]

    def variant(self, name: str, context: Context) -> VariantResult:
        """Flag `name`'s variant: the winning strategy's, else the flag's own."""
        feature = self.features.get(name)
        if feature is None:
            return _OFF
        on, strategy = self._winning(feature, context)
        if not on:
            return _OFF
        if strategy is not None and strategy.variants:
            group = str(strategy.parameters.get("groupId") or feature.name)
            stickiness = strategy.variants[0].stickiness or strategy.parameters.get("stickiness")
            chosen = select(strategy.variants, group, stickiness, context, self.rng)
            if chosen is not None:
                return _chosen(chosen)
        stickiness = feature.variants[0].stickiness if feature.variants else None
        chosen = select(feature.variants, feature.name, stickiness, context, self.rng)
        return _chosen(chosen) if chosen is not None else _ON_WITHOUT_VARIANT
