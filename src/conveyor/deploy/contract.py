"""When a contract migration may run, and which rollbacks an applied one forbids.

Pure decisions (contracting.py applies them to the records): a contract removes what releases
older than the one that brought it still need, so it waits while any host of the
environment serves or keeps warm such a release; once applied, a rollback to a release
older than the one that brought it would run code on a schema it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Held:
    """A release a host of the environment runs: serving (weight > 0) or kept warm."""

    host: str
    release: str
    built: datetime
    serving: bool


@dataclass(frozen=True)
class Contract:
    """migrations.contract of a release (the one that brought it), for one environment."""

    release: str
    built: datetime
    command: str


def contract_wait(contract: Contract, held: Sequence[Held]) -> str | None:
    """Why the contract must wait (the hosts holding older releases), or None: it may run."""
    older = [h for h in held if h.built < contract.built]
    if not older:
        return None
    by_release: dict[str, list[str]] = {}
    for h in sorted(older, key=lambda h: (h.built, h.host)):
        what = "served on" if h.serving else "kept warm on"
        by_release.setdefault(h.release, []).append(f"{what} {h.host}")
    parts = [f"release {r} ({', '.join(hosts)})" for r, hosts in by_release.items()]
    return (
        f"the contract of release {contract.release} waits: "
        + "; ".join(parts)
        + ", which is older and may still use what the contract removes; it runs once no "
        "host serves or keeps warm a release older than " + contract.release
    )


def rollback_refusal(
    target: str, target_built: datetime, applied: Mapping[str, datetime]
) -> str | None:
    """Why a rollback to `target` is refused (an applied contract of a newer release than
    it removed what it needs), or None. `applied`: release that brought it -> built."""
    past = sorted((built, release) for release, built in applied.items() if target_built < built)
    if not past:
        return None
    _built, release = past[0]
    return (
        f"refused: the contract migration of release {release} has been applied, and release "
        f"{target} is older: it may read what the contract removed. Roll back to {release} "
        "or a newer release, or deploy a fix forward"
    )
