"""Where a run's promotion chain stands, from its deployments that ended."""

from __future__ import annotations

import pytest

from conveyor.cli.chain import chain_result
from conveyor.protocol import DeploymentOut
from tests.cli.records import deployment_out

CHAIN = ["staging", "production"]


def ended(*deployments: tuple[str, str]) -> list[DeploymentOut]:
    return [deployment_out(i, environment=e, state=s) for i, (e, s) in enumerate(deployments, 1)]


@pytest.mark.parametrize(
    ("chain", "done", "result"),
    [
        (CHAIN, [], None),  # nothing ended yet
        (CHAIN, [("staging", "succeeded")], None),  # on its way to production
        (CHAIN, [("staging", "succeeded"), ("production", "succeeded")], True),
        (CHAIN, [("staging", "failed")], False),  # rolled back in staging: the chain ends
        (CHAIN, [("staging", "succeeded"), ("production", "failed")], False),
        (CHAIN, [("staging", "cancelled")], False),  # aborted
        (CHAIN, [("staging", "superseded")], False),  # a newer release took its place
        (["production"], [("production", "succeeded")], True),
        ([], [], True),  # no environment: the build was the end
    ],
)
def test_the_chain_ends_at_its_last_environment_or_its_first_failure(
    chain: list[str], done: list[tuple[str, str]], result: bool | None
) -> None:
    assert chain_result(chain, ended(*done)) is result
