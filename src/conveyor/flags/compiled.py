"""A router's flags compiled for requests that name only a user: what HAProxy's Lua
action evaluates, and the embedded router's fast path.

A router knows one thing of a request's user: the id its cookie or header carries. For
such a context, a conveyor flag (definition.to_feature) reduces to: on/off, the ids it
is always on for, a rollout percentage hashed by the user (or at random without one),
constraints on the user id, and the variants' weights. Constraints on any other field
have one answer whoever the user is (the field is missing), computed here once. What
does not reduce so (a constraint on the clock, an operator on the user id beyond
in/not in/str_*, segments, dependencies, strategy variants, overrides) is Unsupported:
the HAProxy driver refuses it, naming it, and the embedded router evaluates it in full.

`encode` writes the compiled flags as one line of text (the value of HAProxy's map
entry, no spaces): `SOURCE_KIND|SOURCE_NAME!FLAG!FLAG…`, each flag's fields joined by
`|`, strings percent-encoded. agent/routing/conveyor_flags.lua reads it back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import quote

from ..protocol.unleash import ClientFeatures, Constraint, Feature
from .constraints import all_satisfied
from .context import Context
from .hashing import normalized_hash, normalized_variant_hash

# operators on the user id the Lua action implements, exactly as constraints.py does
USER_OPERATORS = frozenset({"IN", "NOT_IN", "STR_CONTAINS", "STR_STARTS_WITH", "STR_ENDS_WITH"})
STRATEGIES = frozenset({"userWithId", "flexibleRollout", "default"})


class Unsupported(ValueError):
    """A flag a router cannot evaluate from the user id alone; the message names it."""


@dataclass(frozen=True)
class UserConstraint:
    operator: str
    values: tuple[str, ...]
    inverted: bool
    case_insensitive: bool

    def satisfied(self, user: str | None) -> bool:
        op, values = self.operator, self.values
        if op == "IN":
            result = user is not None and user in values
        elif op == "NOT_IN":
            result = user is None or user not in values
        elif user is None:
            result = False
        else:
            value = user
            if self.case_insensitive:
                value, values = value.lower(), tuple(v.lower() for v in values)
            if op == "STR_STARTS_WITH":
                result = any(value.startswith(v) for v in values)
            elif op == "STR_ENDS_WITH":
                result = any(value.endswith(v) for v in values)
            else:
                result = any(v in value for v in values)
        return self.inverted != result


@dataclass(frozen=True)
class CompiledFlag:
    """One flag for a context holding a user id (or none)."""

    name: str
    enabled: bool
    users: frozenset[str]  # always on for these
    always: bool  # on for everyone (a default strategy, or no strategy)
    rollout: int  # percent of users the rollout strategy takes (0: none)
    rollout_by: str  # default (the user, else at random) | userId (the user, else off) | random
    group: str  # the rollout's hash group
    constraints: tuple[UserConstraint, ...]  # on the user id (the others hold: else rollout 0)
    variants: tuple[tuple[str, int], ...]  # (name, weight)
    variant_by_user: bool  # the user's id picks the variant (else: at random)

    def answer(self, user: str | None) -> str:
        """`name=on|off|VARIANT` for this user (None: random answers, as the SDKs')."""
        if not self.enabled or not self._on(user):
            return f"{self.name}=off"
        if not self.variants:
            return f"{self.name}=on"
        total = sum(w for _, w in self.variants)
        if total <= 0:
            return f"{self.name}=on"
        value = user if user and self.variant_by_user else str(random.randint(1, 100))
        target = normalized_variant_hash(value, self.name, total)
        counter = 0
        for name, weight in self.variants:
            if weight == 0:
                continue
            counter += weight
            if counter >= target:
                return f"{self.name}={name}"
        return f"{self.name}=on"

    def _on(self, user: str | None) -> bool:
        if self.always or (user is not None and user in self.users):
            return True
        if self.rollout <= 0 or not all(c.satisfied(user) for c in self.constraints):
            return False
        if self.rollout_by == "random" or (self.rollout_by == "default" and not user):
            value: str | None = str(random.randint(1, 100))
        else:
            value = user
        return bool(value) and normalized_hash(value or "", self.group) <= self.rollout


def _unsupported(feature: Feature, what: str) -> Unsupported:
    return Unsupported(
        f"flag {feature.name!r}: {what} cannot be evaluated from the user id alone by the "
        "HAProxy router; use the embedded router (routing: embedded) or drop it"
    )


def _constraints(feature: Feature, constraints: list[Constraint]) -> list[UserConstraint] | None:
    """The constraints on the user id; None if another one fails whoever the user is."""
    on_user: list[UserConstraint] = []
    others: list[Constraint] = []
    for c in constraints:
        if c.operator.startswith("DATE_"):
            raise _unsupported(feature, f"a {c.operator} constraint (the clock)")
        if c.context_name == "userId":
            if c.operator not in USER_OPERATORS:
                raise _unsupported(feature, f"a {c.operator} constraint on userId")
            values = tuple(c.values) if c.values else ((c.value,) if c.value else ())
            on_user.append(UserConstraint(c.operator, values, c.inverted, c.case_insensitive))
        else:
            others.append(c)
    return on_user if all_satisfied(others, Context()) else None


def compile_feature(feature: Feature) -> CompiledFlag:
    """One feature of a conveyor document, compiled; Unsupported names what is not."""
    if feature.dependencies:
        raise _unsupported(feature, "a dependency on another flag")
    users: set[str] = set()
    always, rollout, rollout_by, group = False, 0, "default", feature.name
    constraints: tuple[UserConstraint, ...] = ()
    for strategy in feature.strategies:
        if strategy.name not in STRATEGIES or strategy.segments or strategy.variants:
            raise _unsupported(feature, f"strategy {strategy.name!r} as written")
        if strategy.name == "userWithId":
            if strategy.constraints:
                raise _unsupported(feature, "constraints on a user-id strategy")
            ids = str(strategy.parameters.get("userIds") or "")
            users.update(u.strip() for u in ids.split(",") if u.strip())
            continue
        found = _constraints(feature, list(strategy.constraints))
        if strategy.name == "default":
            if found == []:
                always = True
            elif found is not None:
                raise _unsupported(feature, "constraints on the user id of a default strategy")
            continue
        if rollout or constraints:
            raise _unsupported(feature, "two rollout strategies")
        stickiness = str(strategy.parameters.get("stickiness") or "default")
        if stickiness not in ("default", "userId", "random"):
            found = None  # a field a router never has: the rollout takes nobody
        percent = strategy.parameters.get("rollout", 0)
        rollout = 0 if found is None else int(float(str(percent or 0)))
        constraints, rollout_by = tuple(found or ()), stickiness
        group = str(strategy.parameters.get("groupId") or feature.name)
    if not feature.strategies:
        always = True
    if any(v.overrides for v in feature.variants):
        raise _unsupported(feature, "variant overrides")
    sticky = feature.variants[0].stickiness if feature.variants else None
    return CompiledFlag(
        name=feature.name,
        enabled=feature.enabled,
        users=frozenset(users),
        always=always,
        rollout=rollout,
        rollout_by=rollout_by,
        group=group,
        constraints=constraints,
        variants=tuple((v.name, v.weight) for v in feature.variants),
        variant_by_user=not sticky or sticky in ("default", "userId"),
    )


def compile_document(document: ClientFeatures) -> list[CompiledFlag]:
    """Every flag of a document, sorted by name (the header's order)."""
    if document.segments and any(s for f in document.features for s in _segments(f)):
        raise Unsupported("segments cannot be evaluated by the HAProxy router")
    return [compile_feature(f) for f in sorted(document.features, key=lambda f: f.name)]


def _segments(feature: Feature) -> list[int]:
    return [s for strategy in feature.strategies for s in strategy.segments]


def _q(text: str) -> str:
    return quote(text, safe="")


def encode(source_kind: str, source_name: str, flags: list[CompiledFlag]) -> str:
    """The compiled flags as one line for the Lua action (see the module's docstring)."""
    parts = [f"{source_kind}|{_q(source_name)}"]
    for f in flags:
        constraints = ",".join(
            f"{c.operator}:{int(c.inverted)}:{int(c.case_insensitive)}:"
            + "+".join(_q(v) for v in c.values)
            for c in f.constraints
        )
        fields = [
            _q(f.name),
            str(int(f.enabled)),
            ",".join(_q(u) for u in sorted(f.users)),
            str(int(f.always)),
            str(f.rollout),
            f.rollout_by,
            _q(f.group),
            constraints,
            ",".join(f"{_q(n)}:{w}" for n, w in f.variants),
            str(int(f.variant_by_user)),
        ]
        parts.append("|".join(fields))
    return "!".join(parts)
