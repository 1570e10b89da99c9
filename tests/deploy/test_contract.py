"""When a contract may run, and which rollbacks an applied contract refuses (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.deploy.contract import Contract, Held, contract_wait, rollback_refusal

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def built(n: int) -> datetime:
    return T0 + timedelta(hours=n)


# releases r1 < r2 < r3; r2 brought the contract
CONTRACT = Contract("r2", built(2), "./bin/migrate-contract")


@pytest.mark.parametrize(
    ("held", "waits_for"),
    [
        ([], None),
        ([Held("web-1", "r2", built(2), True)], None),
        ([Held("web-1", "r3", built(3), True), Held("web-1", "r2", built(2), False)], None),
        (
            [Held("web-1", "r2", built(2), True), Held("web-1", "r1", built(1), False)],
            ["release r1 (kept warm on web-1)"],
        ),
        (
            [
                Held("web-2", "r1", built(1), True),
                Held("web-1", "r1", built(1), False),
                Held("web-1", "r2", built(2), True),
            ],
            ["release r1 (kept warm on web-1, served on web-2)"],
        ),
    ],
)
def test_a_contract_waits_while_an_older_release_is_served_or_warm(
    held: list[Held], waits_for: list[str] | None
) -> None:
    reason = contract_wait(CONTRACT, held)
    if waits_for is None:
        assert reason is None
        return
    assert reason is not None
    for part in waits_for:
        assert part in reason
    assert "runs once no host serves or keeps warm a release older than r2" in reason


@pytest.mark.parametrize(
    ("target", "when", "applied", "refused_by"),
    [
        ("r1", built(1), {}, None),
        ("r1", built(1), {"r2": built(2)}, "r2"),
        ("r2", built(2), {"r2": built(2)}, None),  # the release that brought it is fine
        ("r3", built(3), {"r2": built(2)}, None),
        ("r1", built(1), {"r3": built(3), "r2": built(2)}, "r2"),
    ],
)
def test_a_rollback_past_an_applied_contract_is_refused_with_its_reason(
    target: str, when: datetime, applied: dict[str, datetime], refused_by: str | None
) -> None:
    reason = rollback_refusal(target, when, applied)
    if refused_by is None:
        assert reason is None
        return
    assert reason is not None
    assert f"contract migration of release {refused_by} has been applied" in reason
    assert f"Roll back to {refused_by} or a newer release" in reason
