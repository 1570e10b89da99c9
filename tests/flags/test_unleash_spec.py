"""Every case of the Unleash client specification (vendored, see unleash_spec/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.delta import apply_events
from conveyor.protocol.unleash import ClientFeatures

SPEC = Path(__file__).parent / "unleash_spec"


def _cases(kind: str) -> list[Any]:
    out = []
    for name in json.loads((SPEC / "index.json").read_text()):
        suite = json.loads((SPEC / name).read_text())
        for case in suite.get(kind, []):
            out.append(pytest.param(suite["state"], case, id=f"{name}: {case['description']}"))
    return out


def _flags(state: dict[str, Any]) -> FlagSet:
    if "events" in state:
        return FlagSet(apply_events(state["events"]))
    return FlagSet(ClientFeatures.model_validate(state))


def test_every_suite_of_the_index_is_vendored() -> None:
    names = json.loads((SPEC / "index.json").read_text())
    assert len(names) == len(list(SPEC.glob("[0-9]*.json")))


@pytest.mark.parametrize(("state", "case"), _cases("tests"))
def test_enabled(state: dict[str, Any], case: dict[str, Any]) -> None:
    flags = _flags(state)
    context = Context.from_mapping(case["context"])
    assert flags.is_enabled(case["toggleName"], context) is case["expectedResult"]


@pytest.mark.parametrize(("state", "case"), _cases("variantTests"))
def test_variant(state: dict[str, Any], case: dict[str, Any]) -> None:
    flags = _flags(state)
    context = Context.from_mapping(case["context"])
    assert flags.variant(case["toggleName"], context).as_json() == case["expectedResult"]
