"""Run records: a run that ends leaves none of its steps running."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.pipeline.runs import end_unfinished_steps
from conveyor.store.models import Step

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

# name, (attempt, state) of each step, the run's attempt, states after, indexes broken off
CASES = [
    ("all ended", [(1, "succeeded"), (1, "skipped")], 1, ["succeeded", "skipped"], []),
    ("checkout running", [(1, "running")], 1, ["failed"], [0]),
    (
        "a step running, later pending",
        [(1, "succeeded"), (1, "running"), (1, "pending")],
        1,
        ["succeeded", "failed", "skipped"],
        [1],
    ),
    (
        "an older attempt is history",
        [(1, "interrupted"), (2, "running"), (2, "pending")],
        2,
        ["interrupted", "failed", "skipped"],
        [1],
    ),
]


@pytest.mark.parametrize(
    ("steps", "attempt", "after", "broken"),
    [pytest.param(*case, id=name) for name, *case in CASES],
)
def test_ending_a_run_ends_its_unfinished_steps(
    steps: list[tuple[int, str]], attempt: int, after: list[str], broken: list[int]
) -> None:
    records = [Step(attempt=a, state=state, position=i) for i, (a, state) in enumerate(steps)]
    ended = end_unfinished_steps(records, attempt, "internal error: boom", NOW)
    assert [step.state for step in records] == after
    assert [records.index(step) for step in ended] == broken
    for step in ended:
        assert step.reason == "internal error: boom" and step.finished_at == NOW
