"""Constraint operators of the Unleash specification: does a context satisfy a constraint?"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from datetime import UTC, datetime

from ..protocol.unleash import OPERATORS, Constraint
from .context import Context
from .regex import compile_pattern
from .semver import parse as parse_version


def _single(constraint: Constraint) -> str | None:
    if constraint.value is not None:
        return constraint.value
    return constraint.values[0] if constraint.values else None


def _strings(constraint: Constraint, value: str | None) -> bool:
    if value is None:
        return False
    values = constraint.values
    if constraint.case_insensitive:
        value = value.lower()
        values = [v.lower() for v in values]
    if constraint.operator == "STR_STARTS_WITH":
        return any(value.startswith(v) for v in values)
    if constraint.operator == "STR_ENDS_WITH":
        return any(value.endswith(v) for v in values)
    return any(v in value for v in values)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number


_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "EQ": lambda a, b: a == b,
    "GT": lambda a, b: a > b,  # type: ignore[operator]
    "GTE": lambda a, b: a >= b,  # type: ignore[operator]
    "LT": lambda a, b: a < b,  # type: ignore[operator]
    "LTE": lambda a, b: a <= b,  # type: ignore[operator]
    "AFTER": lambda a, b: a > b,  # type: ignore[operator]
    "BEFORE": lambda a, b: a < b,  # type: ignore[operator]
}


def _numeric(constraint: Constraint, value: str | None) -> bool:
    wanted, actual = _number(_single(constraint)), _number(value)
    if wanted is None or actual is None:
        return False
    return _COMPARE[constraint.operator.removeprefix("NUM_")](actual, wanted)


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _date(constraint: Constraint, context: Context) -> bool:
    wanted = _moment(_single(constraint))
    now = _moment(context.current_time) if context.current_time else datetime.now(UTC)
    if wanted is None or now is None:
        return False
    return _COMPARE[constraint.operator.removeprefix("DATE_")](now, wanted)


def _semver(constraint: Constraint, value: str | None) -> bool:
    wanted_text = _single(constraint)
    if value is None or wanted_text is None:
        return False
    actual, wanted = parse_version(value), parse_version(wanted_text)
    if actual is None or wanted is None:
        return False
    return _COMPARE[constraint.operator.removeprefix("SEMVER_")](actual, wanted)


def _regex(constraint: Constraint, value: str | None) -> bool:
    pattern_text = _single(constraint)
    if value is None or pattern_text is None:
        return False
    pattern = compile_pattern(pattern_text, constraint.case_insensitive)
    return pattern is not None and pattern.search(value) is not None


def _cidr(constraint: Constraint, value: str | None) -> bool:
    if value is None:
        return False
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    for text in constraint.values:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if address in network:
            return True
    return False


def _operate(constraint: Constraint, context: Context) -> bool:
    operator = constraint.operator
    value = context.value(constraint.context_name)
    if operator == "IN":
        return value is not None and value in constraint.values
    if operator == "NOT_IN":
        return value is None or value not in constraint.values
    if operator.startswith("STR_"):
        return _strings(constraint, value)
    if operator.startswith("NUM_"):
        return _numeric(constraint, value)
    if operator.startswith("DATE_"):
        return _date(constraint, context)
    if operator.startswith("SEMVER_"):
        return _semver(constraint, value)
    if operator == "REGEX":
        return _regex(constraint, value)
    return _cidr(constraint, value)


def satisfied(constraint: Constraint, context: Context) -> bool:
    """Whether the context satisfies one constraint; an unknown operator never does."""
    if constraint.operator not in OPERATORS:
        return False
    return constraint.inverted != _operate(constraint, context)


def all_satisfied(constraints: list[Constraint], context: Context) -> bool:
    return all(satisfied(c, context) for c in constraints)
