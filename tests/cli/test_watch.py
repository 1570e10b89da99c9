"""The deployment follower's lines, from a scripted sequence of API answers."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from rich.console import Console

from conveyor.cli.client import Client
from conveyor.cli.watch import follow_deployment, host_done
from conveyor.protocol import DeploymentOut, EnvironmentStatus, Placement, ReleaseWeight
from tests.cli.records import deployment_out, step_out

SPLIT = [{"release": "r1", "weight": 50}, {"release": "r2", "weight": 50}]


def place(
    desired: list[dict[str, Any]],
    observed: dict[str, int],
    *,
    online: bool = True,
    converged: bool = True,
    phase: str = "healthy",
) -> Placement:
    return Placement.model_validate(
        {
            "host": "web-1",
            "online": online,
            "converged": converged,
            "desired": desired,
            "observed": [{"release": r, "weight": w, "phase": phase} for r, w in observed.items()],
        }
    )


@pytest.mark.parametrize(
    ("host", "targets", "done"),
    [
        (place(SPLIT, {"r1": 50, "r2": 50}), SPLIT, True),
        (place(SPLIT, {"r1": 50, "r2": 50}, converged=False), SPLIT, False),
        (place(SPLIT, {"r1": 50, "r2": 50}, online=False), SPLIT, False),
        (place(SPLIT, {"r1": 100, "r2": 0}), SPLIT, False),  # not routed yet
        # still the previous step's desired state: converged means nothing for this step
        (place([{"release": "r1", "weight": 100}], {"r1": 100}), SPLIT, False),
        # a preview: the new release runs without traffic
        (
            place([{"release": "r1", "weight": 100}, {"release": "r2", "weight": 0}], {"r1": 100}),
            [{"release": "r1", "weight": 100}, {"release": "r2", "weight": 0}],
            True,
        ),
    ],
)
def test_a_host_is_done_when_it_routes_what_the_step_wrote(
    host: Placement, targets: list[dict[str, Any]], done: bool
) -> None:
    assert host_done(host, [ReleaseWeight.model_validate(t) for t in targets]) is done


def step(position: int, kind: str, name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"position": position, "kind": kind, "name": name, "state": state, **extra}


def deployment(state: str, steps: list[dict[str, Any]], **extra: Any) -> DeploymentOut:
    return deployment_out(
        7,
        release="r2",
        previous_release="r1" if steps else None,
        state=state,
        hosts=["web-1"] if steps else [],
        created_at="2026-01-01T00:00:00",
        steps=[step_out(**s) for s in steps],
        **extra,
    )


class Scripted:
    """Answers the typed client's calls from a script: one deployment record per look, fixed
    placements."""

    def __init__(self, looks: list[DeploymentOut], places: list[Placement]) -> None:
        self.looks = looks
        self.places = places

    def environments(self, app: str) -> list[EnvironmentStatus]:
        env = {"name": "production", "strategy": "canary", "release": None}
        return [
            EnvironmentStatus.model_validate(
                env | {"hosts": self.places, "deployment": None, "last": None}
            )
        ]

    def deployment(self, deployment_id: int) -> DeploymentOut:
        return self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]


def test_a_canary_that_fails_its_analysis_prints_each_event_once() -> None:
    preview = {"web-1": [{"release": "r1", "weight": 100}, {"release": "r2", "weight": 0}]}
    half = {"web-1": SPLIT}
    back = {"web-1": [{"release": "r1", "weight": 100}]}
    judged = {"verdict": "fail", "requests": 240, "error_rate": 0.125, "p99": 0.004}
    failed = "analysis failed: error rate 12.5% over the 5% ceiling"
    looks = [
        deployment("waiting", [], reason="waiting for approval: conveyor approve 3"),
        deployment("waiting", [], reason="waiting for approval: conveyor approve 3"),
        deployment(
            "running",
            [
                step(0, "preview", "start r2 beside r1", "running", targets=preview),
                step(1, "weight", "50% of traffic to r2", "pending", targets=half),
            ],
        ),
        deployment(
            "running",
            [
                step(0, "preview", "start r2 beside r1", "succeeded", targets=preview, duration=2),
                step(
                    1,
                    "weight",
                    "50% of traffic to r2",
                    "running",
                    targets=half,
                    log="00:00:01 analysis: inconclusive after 12 requests\n00:00:02 anal",
                ),
            ],
        ),
        deployment(
            "failed",
            [
                step(0, "preview", "start r2 beside r1", "succeeded", targets=preview, duration=2),
                step(
                    1,
                    "weight",
                    "50% of traffic to r2",
                    "failed",
                    targets=half,
                    reason=failed,
                    judgement=judged,
                    log="00:00:01 analysis: inconclusive after 12 requests\n"
                    "00:00:02 analysis: fail after 240 requests\n",
                ),
                step(2, "rollback", "roll back 1 host(s) to r1", "succeeded", targets=back),
            ],
            reason=failed,
            duration=9.5,
        ),
    ]
    places = [place(preview["web-1"], {"r1": 100})]
    console = Console(file=io.StringIO(), width=200, color_system=None)
    final = follow_deployment(cast(Client, Scripted(looks, places)), 7, console, interval=0)
    assert final.state == "failed"
    printed = cast(io.StringIO, console.file).getvalue().splitlines()
    assert printed == [
        "⏸ waiting for approval: conveyor approve 3",
        "started on web-1 (serving r1 before)",
        "▶ step 1/2 start r2 beside r1",
        "    ✓ web-1: r1 100%, r2 0% (1/1 hosts)",
        "✓ start r2 beside r1 succeeded in 2.0s",
        "▶ step 2/2 50% of traffic to r2",
        "    00:00:01 analysis: inconclusive after 12 requests",
        "    00:00:02 analysis: fail after 240 requests",
        f"✗ 50% of traffic to r2 failed: {failed} — judge: fail, 240 requests, "
        "error rate 12.50%, p99 4 ms",
        "↩ roll back 1 host(s) to r1",
        "    ✓ web-1: r1 100% (1/1 hosts)",
        "✓ roll back 1 host(s) to r1 succeeded",
        f"✗ deployment #7 failed: {failed}",
        "↩ roll back 1 host(s) to r1: done",
    ]
