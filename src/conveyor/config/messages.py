"""Turning pydantic's validation errors into ConfigIssues a person can act on."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic_core import ErrorDetails

from conveyor.config.base import KEY, describe
from conveyor.config.errors import ConfigIssue
from conveyor.config.source import DocPath, SourceMap

_EXPECTED_TYPE = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


def validation_issues(
    exc: ValidationError, root: type[BaseModel], data: Any, source: SourceMap, filename: str
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, placed at the offending key or value."""
    issues = []
    for error in exc.errors(include_url=False):
        path, at_key = _document_path(error["loc"], data)
        kind = error["type"]
        if kind == "extra_forbidden" or at_key:
            line, column = source.key(path)
        else:
            line, column = source.value(path)
        if kind == "extra_forbidden":
            # Say where the unknown key is, but name it in the message, not the path.
            shown_path, message = path[:-1], _unknown_key(root, error)
        elif kind == "missing":
            shown_path, message = path, f"missing required key {error['loc'][-1]!r}"
        else:
            shown_path, message = path, _message(error)
        issues.append(ConfigIssue(filename, line, column, message, format_path(shown_path)))
    return issues


def format_path(path: DocPath) -> str:
    """Spell a document path like environments.production.steps[1]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _document_path(loc: tuple[str | int, ...], data: Any) -> tuple[DocPath, bool]:
    """Follow pydantic's location through the data; drop parts that name no key or item.

    Pydantic's locations also hold union tags and validator names, which are not in the
    document. Returns the path and whether the error is about a key rather than a value.
    """
    node = data
    path: list[str | int] = []
    at_key = False
    for part in loc:
        if part == KEY:
            at_key = True
        elif _has(node, part):
            node = node[part]
            path.append(part)
    return tuple(path), at_key


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return False


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = describe(error["input"])
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _EXPECTED_TYPE:
        return f"expected {_EXPECTED_TYPE[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the listed values')}, got {got}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"expected a number {words} {ctx.get(name)}, got {got}"
    if kind == "string_too_short":
        return "expected a non-empty string"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length', 1)} item(s), got {got}"
    if kind in ("conveyor_hosts", "conveyor_source"):
        return f"{error['msg']}, got {got}"
    return error["msg"]


def _unknown_key(root: type[BaseModel], error: ErrorDetails) -> str:
    key = str(error["loc"][-1])
    model = _model_at(root, error["loc"][:-1])
    if model is None:
        return f"unknown key {key!r}"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f", did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint} (expected one of: {', '.join(allowed)})"


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validated the mapping at a pydantic location."""
    annotation: Any = root
    for part in loc:
        annotation = _child(annotation, part)
        if annotation is None:
            return None
    found = _strip(annotation)
    members = get_args(found) if _is_union(found) else (found,)
    for member in members:
        member = _strip(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _child(annotation: Any, part: str | int) -> Any:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = get_origin(annotation)
    if origin is list:
        return get_args(annotation)[0] if isinstance(part, int) else None
    if origin is dict:
        return get_args(annotation)[1]
    if _is_union(annotation):
        members = get_args(annotation)
        for member in members:
            if get_origin(member) is Annotated and any(
                isinstance(meta, Tag) and meta.tag == part for meta in member.__metadata__
            ):
                return member  # the part was a union tag: it selects, it does not descend
        present = [member for member in members if member is not type(None)]
        if len(present) == 1:
            return _child(present[0], part)
    return None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)
