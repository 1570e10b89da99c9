"""A conveyor flag's state as Unleash features, evaluated: tables of who gets what."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.definition import NamedFlag, changed, to_document
from conveyor.flags.hashing import normalized_hash
from conveyor.protocol.flags import FlagChange, FlagState, FlagVariant
from conveyor.store.flags import Declared, catalog


def _flags(**state: Any) -> FlagSet:
    return FlagSet(to_document([NamedFlag("f", "", FlagState.model_validate(state))]))


@pytest.mark.parametrize(
    ("state", "context", "on"),
    [
        ({}, {"userId": "1"}, False),
        ({"enabled": True}, {"userId": "1"}, True),
        ({"enabled": True, "rollout": 0}, {"userId": "1"}, False),
        ({"enabled": True, "rollout": 0, "user_ids": ["1"]}, {"userId": "1"}, True),
        ({"enabled": False, "user_ids": ["1"]}, {"userId": "1"}, False),
        (
            {
                "enabled": True,
                "constraints": [{"context_name": "plan", "operator": "IN", "values": ["pro"]}],
            },
            {"userId": "1", "properties": {"plan": "free"}},
            False,
        ),
        (
            {
                "enabled": True,
                "constraints": [
                    {"context_name": "version", "operator": "SEMVER_GTE", "values": ["2.0.0"]}
                ],
            },
            {"userId": "1", "properties": {"version": "2.1.0"}},
            True,
        ),
    ],
)
def test_who_a_flag_is_on_for(state: dict[str, Any], context: dict[str, Any], on: bool) -> None:
    assert _flags(**state).is_enabled("f", Context.from_mapping(context)) is on


def test_a_rollout_keeps_its_users_as_it_grows() -> None:
    users = [str(i) for i in range(2000)]
    ten, fifty = _flags(enabled=True, rollout=10), _flags(enabled=True, rollout=50)
    in_ten = {u for u in users if ten.is_enabled("f", Context(user_id=u))}
    in_fifty = {u for u in users if fifty.is_enabled("f", Context(user_id=u))}
    assert in_ten < in_fifty
    assert in_ten == {u for u in users if normalized_hash(u, "f") <= 10}
    assert 150 < len(in_ten) < 250 and 900 < len(in_fifty) < 1100


def test_variants_split_by_weight_with_payloads() -> None:
    flags = _flags(
        enabled=True,
        variants=[{"name": "a", "weight": 20}, {"name": "b", "weight": 80, "payload": "x"}],
    )
    seen = [flags.variant("f", Context(user_id=str(i))) for i in range(2000)]
    share_a = sum(v.name == "a" for v in seen) / len(seen)
    assert 0.15 < share_a < 0.25
    assert all(v.payload is not None and v.payload.value == "x" for v in seen if v.name == "b")


def test_a_change_replaces_only_the_fields_it_gives() -> None:
    state = FlagState(enabled=True, rollout=30, user_ids=["u"])
    after = changed(state, FlagChange(rollout=60))
    assert after == FlagState(enabled=True, rollout=60, user_ids=["u"])


def test_catalog_declared_without_a_row_is_off_with_its_variants() -> None:
    variants = [FlagVariant(name="a", weight=100)]
    entries = catalog([Declared("x", "the x", variants), Declared("a", "", [])], [])
    assert [e.name for e in entries] == ["a", "x"]
    assert entries[1].declared and entries[1].state == FlagState(variants=variants)
