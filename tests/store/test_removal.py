"""When an app may be removed: never under a change underway; queued work and traffic
only with force."""

from __future__ import annotations

import pytest

from conveyor.store.removal import Blockers, refusal

RUNNING = "deployment 3 (production, running)"
QUEUED = "deployment 4 (staging, queued)"


@pytest.mark.parametrize(
    ("blockers", "force", "refused", "says"),
    [
        (Blockers(), False, False, ""),
        (Blockers(), True, False, ""),
        (Blockers(serving=["web-1", "web-2"]), False, True, "serves traffic on web-1, web-2"),
        (Blockers(serving=["web-1"]), True, False, ""),
        (Blockers(pending=[QUEUED]), False, True, f"{QUEUED} waiting to start"),
        (Blockers(pending=[QUEUED]), True, False, ""),
        (Blockers(acting=[RUNNING]), False, True, "abort it"),
        (Blockers(acting=[RUNNING]), True, True, RUNNING),
        (Blockers(acting=["run 7 (running)"], serving=["web-1"]), True, True, "run 7 (running)"),
    ],
)
def test_refusal(blockers: Blockers, force: bool, refused: bool, says: str) -> None:
    why = refusal("shop", blockers, force=force)
    assert (why is not None) == refused, why
    if refused:
        assert why is not None and says in why and "'shop'" in why


def test_a_refusal_without_force_says_how_to_force() -> None:
    why = refusal("shop", Blockers(serving=["web-1"]), force=False)
    assert why is not None and "--force" in why
