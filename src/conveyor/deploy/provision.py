"""Decisions about provisioned environments (pure): the hosts a provision command named,
when a teardown is due, how long to wait before trying a failed one again."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.config.environment import HOST_NAME_PATTERN
from conveyor.notify.messages import Message
from conveyor.store.models import DEPLOYMENT_ACTING, DEPLOYMENT_PENDING

# provisioning: the command runs (or ran when a server was killed); up: its hosts serve the
# deployment; torn_down; teardown_failed: tried, failed, tried again later
STANDING = ("provisioning", "up", "teardown_failed")
FIRST_RETRY = 5.0  # seconds after a failed teardown; doubling up to ...
LAST_RETRY = 300.0


def host_names(output: str) -> tuple[list[str], list[str]]:
    """The host names a provision command printed (one a line, blank lines skipped, each
    once), and the lines that are not names."""
    names: list[str] = []
    bad: list[str] = []
    for line in output.splitlines():
        name = line.strip()
        if not name:
            continue
        if re.fullmatch(HOST_NAME_PATTERN, name) is None:
            bad.append(name[:80])
        elif name not in names:
            names.append(name)
    return names, bad


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed teardown before the next one."""
    return float(min(LAST_RETRY, FIRST_RETRY * 2.0 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Standing:
    """A provisioned environment not yet torn down, as the sweeper sees it."""

    state: str  # of the environment (STANDING)
    deployment_state: str | None  # None: the deployment is gone
    provisioning_here: bool  # this server process runs its provision command now
    tearing_here: bool  # ... or its teardown
    wait_left: float  # seconds before a failed teardown may be tried again (<= 0: now)


def teardown_due(s: Standing) -> bool:
    """Whether to tear the environment down now.

    Its deployment has ended (whatever the result), or its provision command was cut off
    by a killed server (still `provisioning` while no process here runs it: the pending
    deployment provisions anew). Never twice at once, never before a failed one's wait.
    """
    if s.state not in STANDING or s.tearing_here or s.wait_left > 0:
        return False
    ended = s.deployment_state not in DEPLOYMENT_PENDING + DEPLOYMENT_ACTING
    if ended:
        return not s.provisioning_here
    return s.state == "provisioning" and not s.provisioning_here


def notify_of(attempt: int) -> bool:
    """Whether a failed teardown's `attempt` is notified: the first, then every tenth
    (each one is logged as an error and said in the deployment's reason)."""
    return attempt == 1 or attempt % 10 == 0


def teardown_failed(
    app: str,
    environment: str,
    deployment: int,
    attempt: int,
    retry_in: float,
    output: str,
    link: str,
) -> Message:
    """The notification of a failed teardown (kind: failure)."""
    title = f"❌ teardown failed: {app} {environment} (deployment #{deployment})"
    body = "\n".join(
        [
            f"The environment provisioned for deployment #{deployment} of {app} to "
            f"{environment} could not be torn down (attempt {attempt}); it still runs, and "
            f"costs. Tried again in {retry_in:g} s, then less and less often, until it works.",
            "",
            output[-1500:],
            "",
            link,
        ]
    )
    return Message(frozenset({"failure"}), title, body)
