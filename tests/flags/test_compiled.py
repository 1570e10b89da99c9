"""Flags compiled for a user id alone: the same answers as the full evaluator, and what
cannot be compiled named."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.compiled import Unsupported, compile_document, encode
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.flags.fastline import FastLine
from conveyor.flags.header import header_value
from conveyor.protocol.flags import FlagState

STATES: dict[str, dict[str, Any]] = {
    "on": {"enabled": True},
    "off": {},
    "rollout": {"enabled": True, "rollout": 30},
    "ids-and-variants": {
        "enabled": True,
        "rollout": 60,
        "user_ids": ["u-1", "u-7"],
        "variants": [{"name": "x", "weight": 30}, {"name": "y", "weight": 70}],
    },
    "user-suffix": {
        "enabled": True,
        "constraints": [
            {"context_name": "userId", "operator": "STR_ENDS_WITH", "values": ["3", "5"]}
        ],
    },
    "not-listed": {
        "enabled": True,
        "constraints": [
            {"context_name": "userId", "operator": "IN", "values": ["u-2"], "inverted": True}
        ],
    },
    "plan-pro": {
        "enabled": True,
        "constraints": [{"context_name": "plan", "operator": "IN", "values": ["pro"]}],
    },
    "not-pro-by-user-id": {
        "enabled": True,
        "rollout": 50,
        "stickiness": "userId",
        "constraints": [{"context_name": "plan", "operator": "NOT_IN", "values": ["pro"]}],
    },
    "by-session": {"enabled": True, "rollout": 50, "stickiness": "sessionId"},
    "four-variants": {
        "enabled": True,
        "rollout": 80,
        "variants": [
            {"name": "a", "weight": 10},
            {"name": "never", "weight": 0},
            {"name": "b", "weight": 20},
            {"name": "c", "weight": 70},
        ],
    },
    "variants-for-all": {
        "enabled": True,
        "variants": [{"name": "p", "weight": 50}, {"name": "q", "weight": 50}],
    },
    "ids-only": {"enabled": True, "user_ids": ["u-3", "ü-9"]},
    "suffix-rollout": {
        "enabled": True,
        "rollout": 40,
        "constraints": [
            {"context_name": "userId", "operator": "STR_STARTS_WITH", "values": ["u-1"]}
        ],
    },
}


def _document() -> Any:
    return to_document([NamedFlag(n, "", FlagState.model_validate(s)) for n, s in STATES.items()])


def test_the_compiled_flags_answer_as_the_evaluator_for_every_user() -> None:
    document = _document()
    full, compiled = FlagSet(document), compile_document(document)
    fast = FastLine(compiled)
    for i in range(3000):
        user = f"u-{i}" if i % 7 else f"ü-{i} ✓"
        expected = header_value(full, Context(user_id=user))
        assert "; ".join(f.answer(user) for f in compiled) == expected
        assert fast.line(user).decode() == expected


def test_no_flags_make_an_empty_line() -> None:
    assert FastLine([]).line("u-1") == b""


def test_encode_keeps_separators_out_of_the_values() -> None:
    state = FlagState(enabled=True, user_ids=["a b", "c|d", "e!f"])
    line = encode("cookie", "uid", compile_document(to_document([NamedFlag("f", "", state)])))
    assert " " not in line
    assert line.split("!")[1].split("|")[2] == "a%20b,c%7Cd,e%21f"


@pytest.mark.parametrize(
    ("constraint", "named"),
    [
        ({"context_name": "userId", "operator": "NUM_GT", "values": ["3"]}, "NUM_GT"),
        ({"context_name": "at", "operator": "DATE_AFTER", "values": ["2026-01-01"]}, "clock"),
    ],
)
def test_what_a_router_cannot_evaluate_is_named(constraint: dict[str, Any], named: str) -> None:
    state = FlagState.model_validate({"enabled": True, "constraints": [constraint]})
    with pytest.raises(Unsupported, match=named):
        compile_document(to_document([NamedFlag("f", "", state)]))
