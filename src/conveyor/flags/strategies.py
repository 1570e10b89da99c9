"""Activation strategies of the Unleash specification: is a flag on for this context?"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable, Mapping
from typing import Any

from .context import Context, Random
from .hashing import normalized_hash

STRATEGIES = frozenset(
    {
        "default",
        "userWithId",
        "flexibleRollout",
        "gradualRolloutUserId",
        "gradualRolloutSessionId",
        "gradualRolloutRandom",
        "remoteAddress",
        "applicationHostname",
    }
)


def percentage(value: Any) -> int:
    """A rollout percentage parameter ("25", 25 or 25.0); an unreadable one is 0."""
    try:
        return int(float(str(value)))
    except ValueError:
        return 0


def _listed(value: Any) -> list[str]:
    return [item.strip() for item in str(value or "").split(",") if item.strip()]


def rollout_stickiness(stickiness: str, context: Context, rng: Random) -> str | None:
    """The value a flexible rollout hashes: `default` is the user, else the session."""
    if stickiness == "default":
        return context.user_id or context.session_id or rng()
    if stickiness == "random":
        return rng()
    return context.value(stickiness)


def _rollout(parameters: Mapping[str, Any], value: str | None, group: str) -> bool:
    share = percentage(parameters.get("rollout", parameters.get("percentage", 0)))
    if not value:
        return False
    return share > 0 and normalized_hash(value, group) <= share


def _flexible(parameters: Mapping[str, Any], context: Context, group: str, rng: Random) -> bool:
    stickiness = str(parameters.get("stickiness") or "default")
    return _rollout(parameters, rollout_stickiness(stickiness, context, rng), group)


def _remote_address(parameters: Mapping[str, Any], context: Context) -> bool:
    if not context.remote_address:
        return False
    try:
        address = ipaddress.ip_address(context.remote_address)
    except ValueError:
        return context.remote_address in _listed(parameters.get("IPs"))
    for entry in _listed(parameters.get("IPs")):
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _random(parameters: Mapping[str, Any]) -> bool:
    share = percentage(parameters.get("percentage", 0))
    return share > 0 and random.randint(1, 100) <= share


_Rule = Callable[[Mapping[str, Any], Context, str, Random], bool]
_RULES: dict[str, _Rule] = {
    "default": lambda p, c, g, r: True,
    "userWithId": lambda p, c, g, r: (
        c.user_id is not None and c.user_id in _listed(p.get("userIds"))
    ),
    "flexibleRollout": _flexible,
    "gradualRolloutUserId": lambda p, c, g, r: _rollout(p, c.user_id, str(p.get("groupId") or g)),
    "gradualRolloutSessionId": lambda p, c, g, r: _rollout(
        p, c.session_id, str(p.get("groupId") or g)
    ),
    "gradualRolloutRandom": lambda p, c, g, r: _random(p),
    "remoteAddress": lambda p, c, g, r: _remote_address(p, c),
    "applicationHostname": lambda p, c, g, r: (
        socket.gethostname().lower() in [h.lower() for h in _listed(p.get("hostNames"))]
    ),
}


def activates(
    name: str, parameters: Mapping[str, Any], context: Context, group: str, rng: Random
) -> bool:
    """Whether strategy `name` turns its flag on; an unknown strategy never does.

    `group` is the hash group: the strategy's `groupId` or else the flag's name.
    """
    rule = _RULES.get(name)
    return rule is not None and rule(parameters, context, group, rng)
