"""What the agent knows of one release of one app on this host, while it runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from conveyor.agent.lifecycle import Phase
from conveyor.agent.supervisor import Instance
from conveyor.protocol import DesiredRelease

__all__ = ["ReleaseRuntime"]


@dataclass
class ReleaseRuntime:
    """What this agent knows of one release of one app on this host."""

    app: str
    release: str
    spec: DesiredRelease | None
    phase: Phase = Phase.INSTALLING
    instance: Instance | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    failed_generation: int | None = None
    verified: bool = False  # passed a health check since it started
    drain_started: float | None = None
    warm_until: float | None = None
    # when it last stopped being the app's current (top-weighted) release; None while it is,
    # or if it never was (a preview, a canary rolled back): see warmth.py
    current_until: float | None = None
    was_current: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.release)
