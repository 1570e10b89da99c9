"""Which agent versions a server talks to: its own minor version and the one before.

The agent names its version in a header on every request; the server answers an agent
it does not accept with 426 and a sentence naming both versions. Upgrade the server
first, then the agents: a server of 0.4 still drives agents of 0.3 while they upgrade.
"""

from __future__ import annotations

import re

AGENT_VERSION_HEADER = "X-Conveyor-Agent-Version"
# Agents that predate the header were all 0.1.x: one that sends none is taken for that.
UNNAMED_AGENT_VERSION = "0.1.0"
REFUSED_STATUS = 426  # Upgrade Required

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-]?[0-9A-Za-z.+-]*)?$")


def major_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version like 0.3.1 or 1.2.0rc1; None if it is not one."""
    found = _VERSION.match(version.strip())
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2))


def agent_refusal(server: str, agent: str | None) -> str | None:
    """Why a server of version `server` refuses an agent of version `agent` (None: it
    accepts it). Accepted: the same major version, at the server's minor or one below."""
    shown = agent if agent is not None else f"{UNNAMED_AGENT_VERSION} (or older)"
    theirs = major_minor(agent if agent is not None else UNNAMED_AGENT_VERSION)
    ours = major_minor(server)
    if ours is None:  # a development build that names no version: it talks to anyone
        return None
    accepted = f"{ours[0]}.{ours[1] - 1}.x and {ours[0]}.{ours[1]}.x"
    if ours[1] == 0:
        accepted = f"{ours[0]}.0.x"
    if theirs is None:
        return (
            f"agent version {agent!r} is not a version number; this server ({server}) "
            f"accepts agents {accepted}: install conveyor {server} on the host"
        )
    if theirs > ours:
        return (
            f"agent {shown} is newer than server {server}: upgrade the server first "
            f"(it accepts agents {accepted}), then the agents"
        )
    if theirs[0] != ours[0] or theirs[1] < ours[1] - 1:
        return (
            f"agent {shown} is too old for server {server}, which accepts agents "
            f"{accepted}: upgrade conveyor on this host to {server} (`pipx upgrade conveyor` "
            "or `uv tool upgrade conveyor`), then start the agent again"
        )
    return None


__all__ = [
    "AGENT_VERSION_HEADER",
    "REFUSED_STATUS",
    "UNNAMED_AGENT_VERSION",
    "agent_refusal",
    "major_minor",
]
