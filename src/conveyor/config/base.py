"""Shared plumbing of the conveyor.yml models: the strict base model and error helpers."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# A location relative to the model being validated, as pydantic spells it. The marker
# KEY at the end asks the loader to point at the key rather than at its value.
Loc = tuple[str | int, ...]
KEY = "[key]"


class Section(BaseModel):
    """Base of every conveyor.yml model: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def invalid(problems: Iterable[tuple[Loc, str, object]]) -> ValidationError:
    """Build a ValidationError from (location, message, offending value) triples.

    Raised inside a validator, pydantic prefixes each location with the path of the
    model being validated, so cross-field checks point at the exact key or item.
    """
    details = [
        InitErrorDetails(
            # No context is passed, so braces in the message are kept as written.
            type=PydanticCustomError("conveyor_config", message),
            loc=loc,
            input=value,
        )
        for loc, message, value in problems
    ]
    return ValidationError.from_exception_data("conveyor.yml", details)


def describe(value: object) -> str:
    """Render a YAML value the way a user wrote it, for 'got ...' in messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
