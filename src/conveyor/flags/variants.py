"""Variant selection of the Unleash specification: overrides, then weights by hash."""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol.unleash import Variant
from .context import Context, Random
from .hashing import normalized_variant_hash


def variant_stickiness(stickiness: str | None, context: Context, rng: Random) -> str:
    """The value a variant hashes: `default` is the user, session, then address."""
    if stickiness and stickiness != "default":
        return context.value(stickiness) or rng()
    return context.user_id or context.session_id or context.remote_address or rng()


def override(variants: Sequence[Variant], context: Context) -> Variant | None:
    """The first variant whose override names this context's value, if any."""
    for variant in variants:
        for rule in variant.overrides:
            value = context.value(rule.context_name)
            if value is not None and value in rule.values:
                return variant
    return None


def by_weight(
    variants: Sequence[Variant], group: str, stickiness: str | None, context: Context, rng: Random
) -> Variant | None:
    """The variant whose weight range holds this context's hash; None if weights sum to 0."""
    total = sum(v.weight for v in variants)
    if total <= 0:
        return None
    target = normalized_variant_hash(variant_stickiness(stickiness, context, rng), group, total)
    counter = 0
    for variant in variants:
        if variant.weight == 0:
            continue
        counter += variant.weight
        if counter >= target:
            return variant
    return None


def select(
    variants: Sequence[Variant], group: str, stickiness: str | None, context: Context, rng: Random
) -> Variant | None:
    """A flag's or a strategy's variant for this context: an override, else by weight."""
    if not variants:
        return None
    return override(variants, context) or by_weight(variants, group, stickiness, context, rng)
