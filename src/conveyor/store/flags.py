"""Feature flags in the store: one row per app, environment and flag, and its history.

What conveyor.yml declares and what the store holds meet in `catalog`, a pure function:
a declared flag without a row is off, with its declared variants.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.deployments import Judgement
from conveyor.protocol.flags import FlagChangeOut, FlagState, FlagVariant, GuardedRolloutOut
from conveyor.store.models import Flag, FlagChange, FlagRollout, FlagToken, utcnow

RUNNING = "running"
GAVE_UP = "gave_up"  # a step never saw enough requests with the flag on to be judged


@dataclass(frozen=True)
class Declared:
    """A flag as conveyor.yml declares it."""

    name: str
    description: str
    variants: list[FlagVariant]

    def initial(self) -> FlagState:
        return FlagState(enabled=False, variants=self.variants)


@dataclass(frozen=True)
class Entry:
    """A flag of one environment as users see it: stored, declared, or both."""

    name: str
    description: str
    declared: bool
    state: FlagState
    row: Flag | None


def state_of(row: Flag) -> FlagState:
    return FlagState.model_validate_json(row.state)


def catalog(declared: Iterable[Declared], rows: Iterable[Flag]) -> list[Entry]:
    """Every flag of an environment, by name: a stored state wins over the declaration."""
    by_name = {d.name: d for d in declared}
    entries = {
        d.name: Entry(d.name, d.description, True, d.initial(), None) for d in by_name.values()
    }
    for row in rows:
        found = by_name.get(row.name)
        description = (found.description if found else "") or row.description
        entries[row.name] = Entry(row.name, description, found is not None, state_of(row), row)
    return [entries[name] for name in sorted(entries)]


def rows_of(session: Session, app_id: int, environment: str) -> list[Flag]:
    return list(
        session.scalars(
            select(Flag).where(Flag.app_id == app_id, Flag.environment == environment)
        ).all()
    )


def save(
    session: Session,
    app_id: int,
    environment: str,
    entry: Entry,
    after: FlagState,
    by: str,
    *,
    created: bool = False,
    note: str | None = None,
) -> Flag:
    """Store a flag's new state and a line of history (not committed).

    `created`: the flag did not exist before (its history's `before` is empty); `note`:
    why, when a guarded rollout changed it.
    """
    row = entry.row
    before = None if created else entry.state.model_dump_json()
    if row is None:
        row = Flag(
            app_id=app_id,
            environment=environment,
            name=entry.name,
            description=entry.description,
            state=after.model_dump_json(),
            updated_by=by,
        )
        session.add(row)
    else:
        row.state = after.model_dump_json()
        row.updated_by = by
        row.updated_at = utcnow()
    row.changes.append(FlagChange(by=by, before=before, after=after.model_dump_json(), note=note))
    return row


def history(row: Flag | None) -> list[FlagChangeOut]:
    if row is None:
        return []
    return [
        FlagChangeOut(
            at=c.at,
            by=c.by,
            before=None if c.before is None else FlagState.model_validate_json(c.before),
            after=FlagState.model_validate_json(c.after),
            note=c.note,
        )
        for c in row.changes
    ]


def running_rollout(row: Flag | None) -> FlagRollout | None:
    """The flag's guarded rollout under way, if any."""
    if row is None:
        return None
    return next((r for r in row.rollouts if r.state == RUNNING), None)


def guarded_names(session: Session, app_id: int, environment: str) -> list[str]:
    """The flags of an environment under a guarded rollout (the routers count them)."""
    return sorted(
        session.scalars(
            select(Flag.name)
            .join(FlagRollout)
            .where(
                Flag.app_id == app_id,
                Flag.environment == environment,
                FlagRollout.state == RUNNING,
            )
        ).all()
    )


def rollout_out(rollout: FlagRollout | None) -> GuardedRolloutOut | None:
    if rollout is None:
        return None
    return GuardedRolloutOut(
        id=rollout.id,
        steps=json.loads(rollout.steps),
        step_pause=rollout.step_pause,
        step=rollout.step,
        step_started_at=rollout.step_started_at,
        state=rollout.state,
        judgement=(Judgement.model_validate_json(rollout.judgement) if rollout.judgement else None),
        reason=rollout.reason,
        started_by=rollout.started_by,
        started_at=rollout.started_at,
        ended_at=rollout.ended_at,
    )


def token_scope(session: Session, digest: str) -> FlagToken | None:
    """The client token of this digest, if it is not revoked."""
    return session.scalar(
        select(FlagToken).where(FlagToken.token_hash == digest, FlagToken.revoked_at.is_(None))
    )


def counts_added(counts: Mapping[str, dict[str, object]], bucket: Mapping[str, object]) -> str:
    """A client's per-flag counts (JSON) with one metrics report's `bucket.toggles` added."""
    total: dict[str, dict[str, object]] = {k: dict(v) for k, v in counts.items()}
    toggles = bucket.get("toggles")
    if isinstance(toggles, dict):
        for name, seen in toggles.items():
            if not isinstance(seen, dict):
                continue
            mine = total.setdefault(str(name), {"yes": 0, "no": 0, "variants": {}})
            for key in ("yes", "no"):
                value = seen.get(key, 0)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    mine[key] = int(mine.get(key, 0)) + value  # type: ignore[call-overload]
            variants = seen.get("variants")
            mine_variants = mine.setdefault("variants", {})
            if isinstance(variants, dict) and isinstance(mine_variants, dict):
                for variant, value in variants.items():
                    if isinstance(value, int) and value >= 0:
                        mine_variants[str(variant)] = mine_variants.get(str(variant), 0) + value
    return json.dumps(total)
