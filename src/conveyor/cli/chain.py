"""Following a run's release up its promotion chain: each environment's deployment as it goes.

`conveyor run --follow` prints the run (tests, build), then each deployment the pipeline
makes of the release it built, environment after environment, with the same lines as
`conveyor deploy --follow`. It ends when the last environment's deployment succeeded, or
when one of them ended otherwise (failed and rolled back, cancelled, superseded, refused by
a gate): the chain stops there.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.live import Live

from conveyor.cli.client import Client
from conveyor.cli.render import deployment_title
from conveyor.cli.watch import ENDED, DeploymentFollower, panel, summary
from conveyor.protocol import DeploymentOut, RunOut

# how many of the app's newest deployments are read to find the run's (a chain is a few)
LOOK_BACK = 50


def chain_result(chain: list[str], ended: list[DeploymentOut]) -> bool | None:
    """Where the chain stands, from its deployments that ended (oldest first): False once
    one ended otherwise than succeeded, True once the last environment's succeeded, None
    while it goes on."""
    if any(d.state != "succeeded" for d in ended):
        return False
    if not chain or any(d.environment == chain[-1] for d in ended):
        return True
    return None


def follow_chain(client: Client, run: RunOut, console: Console, *, interval: float = 0.5) -> bool:
    """Print the pipeline's deployments of the run's release until the chain ends; True if
    the release reached the last environment."""
    chain = [env.name for env in client.environments(run.app)]
    if not chain:
        console.print("no environments in conveyor.yml: the release goes nowhere")
        return True
    console.print(f"promotion chain of {run.release}: {' → '.join(chain)}", soft_wrap=True)
    followers: dict[int, DeploymentFollower] = {}
    ended: dict[int, DeploymentOut] = {}
    live = (
        Live(console=console, transient=True, refresh_per_second=8) if console.is_terminal else None
    )
    with live if live is not None else contextlib.nullcontext():
        while True:
            current = None
            for d in _run_deployments(client, run):
                if d.id in ended:
                    continue
                d = client.deployment(d.id)
                follower = followers.get(d.id)
                if follower is None:
                    follower = followers[d.id] = DeploymentFollower(client, console)
                    console.print(f"{deployment_title(d)}; {d.trigger} by {d.triggered_by}")
                places = follower.placements(d)
                follower.events(d, places)
                if d.state in ENDED:
                    ended[d.id] = d
                    summary(d, console)
                else:
                    current = (d, places)
            result = chain_result(chain, sorted(ended.values(), key=lambda d: d.id))
            if result is not None:
                return result
            if live is not None and current is not None:
                live.update(panel(*current))
            time.sleep(interval)


def _run_deployments(client: Client, run: RunOut) -> list[DeploymentOut]:
    """The pipeline's deployments of the run's release, oldest first (without their steps)."""
    listed = client.deployments(run.app, None, LOOK_BACK)
    ours = [
        d
        for d in listed
        if d.run == run.id and d.release == run.release and d.kind == "deploy"
        if d.trigger == "pipeline"
    ]
    return sorted(ours, key=lambda d: d.id)
