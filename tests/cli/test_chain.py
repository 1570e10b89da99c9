"""Where a run's promotion chain stands, from its deployments that ended."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from rich.console import Console

from conveyor.cli.chain import chain_result, follow_chain
from conveyor.cli.client import Client
from conveyor.protocol import DeploymentOut, EnvironmentStatus
from tests.cli.records import deployment_out, run_out

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


class Chain:
    """The typed client's answers for a run whose release goes to staging, then production:
    one list of the app's deployments per look, each record as it is at that look."""

    def __init__(self, looks: list[list[DeploymentOut]]) -> None:
        self.looks = looks
        self.now: list[DeploymentOut] = []

    def environments(self, app: str) -> list[EnvironmentStatus]:
        return [
            EnvironmentStatus.model_validate(
                {"name": name, "strategy": "rolling", "release": None, "deployment": None}
                | {"last": None}
            )
            for name in CHAIN
        ]

    def deployments(self, app: str, env: str | None, limit: int) -> list[DeploymentOut]:
        self.now = self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]
        return self.now

    def deployment(self, deployment_id: int) -> DeploymentOut:
        return next(d for d in self.now if d.id == deployment_id)


def ours(i: int, environment: str, state: str, **over: Any) -> DeploymentOut:
    return deployment_out(
        i, environment=environment, state=state, run=3, release="r2", trigger="pipeline", **over
    )


@pytest.mark.parametrize(
    ("production", "reached", "last"),
    [
        ("succeeded", True, "✓ deployment #12 succeeded in 1.0s: production of shop serves r2"),
        ("failed", False, "✗ deployment #12 failed: verify failed"),
    ],
)
def test_run_follow_prints_each_environment_s_deployment_until_the_chain_ends(
    production: str, reached: bool, last: str
) -> None:
    # another run's deployment and a rollback by hand are not this run's chain
    other = deployment_out(9, run=2, release="r1", state="running", trigger="pipeline")
    back = deployment_out(10, kind="rollback", release="r1", state="running", trigger="rollback")
    looks = [
        [other],
        [other, back, ours(11, "staging", "running")],
        [other, back, ours(11, "staging", "succeeded", duration=1.0)],
        [
            other,
            back,
            ours(11, "staging", "succeeded", duration=1.0),
            ours(12, "production", production, duration=1.0, reason="verify failed"),
        ],
    ]
    run = run_out(3, release="r2")
    console = Console(file=io.StringIO(), width=200, color_system=None)
    assert follow_chain(cast(Client, Chain(looks)), run, console, interval=0) is reached
    printed = cast(io.StringIO, console.file).getvalue().splitlines()
    assert printed[0] == "promotion chain of r2: staging → production"
    assert printed[1].startswith("deployment #11 (canary) of shop to staging: release r2")
    assert "✓ deployment #11 succeeded in 1.0s: staging of shop serves r2" in printed
    assert printed[-1] == last, printed
    assert not any("#9" in line or "#10" in line for line in printed)
