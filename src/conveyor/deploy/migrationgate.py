"""A production migration runs only after the same migration succeeded before it.

"The same" is by content: `migration_hash` digests what a release's migrations will run
(their commands and session limits, the files the commands name, and the SQL
`migrations.sql` prints or lists; without `migrations.sql`, the whole artifact, for the
commands may read any of it). Each migrate (expand) and contract step records the hash
with its outcome; an expand (or a contract) in an environment is refused until a step
of the same phase with the same hash succeeded in every environment listed before it.

This closes what the artifact gate (same bytes) leaves open: a conveyor.yml outside the
artifact (`artifact.include`) may change a migration's command or limits and leave the
bytes as they were; and contracts, which run by themselves in each environment once
the old release went cold, are not deployments the artifact gate sees.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.config.migrationhash import command_files as command_files
from conveyor.config.migrationhash import commands as commands
from conveyor.config.migrationhash import migration_hash as migration_hash
from conveyor.sqllint.sources import SQL_DIGEST_ENV as SQL_DIGEST_ENV
from conveyor.store.models import Deployment, DeploymentStep

Phase = Literal["expand", "contract"]
# the deployment step kind that runs each phase
STEP_KIND: dict[Phase, str] = {"expand": "migrate", "contract": "contract"}


def short(digest: str) -> str:
    return digest[:12]


def refusal(
    phase: Phase,
    release: str,
    digest: str | None,
    env: str,
    order: Sequence[str],
    succeeded: Collection[tuple[str, Phase]],
) -> str | None:
    """Why `phase` of `release`'s migration may not run in `env` yet, or None.

    `order`: the environments in promotion order; `succeeded`: (environment, phase) where
    a step with this same hash succeeded. A release built before hashes were recorded
    (`digest` None) is left to the artifact gate; so is an environment outside `order`.
    """
    if digest is None or env not in order:
        return None
    missing = [e for e in order[: list(order).index(env)] if (e, phase) not in succeeded]
    if not missing:
        return None
    before = missing[0]
    what = "expand" if phase == "expand" else "contract"
    return (
        f"the {what} migration of release {release} (migration {short(digest)}) has not "
        f"succeeded on {before}: a migration runs in {env} only after the same one (its "
        f"commands, the files they run and its SQL, by content hash) succeeded in every "
        f"environment before it ({' → '.join(order)}). "
        + (
            f"Deploy release {release} to {before} first"
            if phase == "expand"
            else f"It runs once the same contract has succeeded on {before}"
        )
    )


def successes(session: Session, app_id: int, digest: str | None) -> set[tuple[str, Phase]]:
    """(environment, phase) where a migrate or contract step with this hash succeeded."""
    if digest is None:
        return set()
    rows = session.execute(
        select(Deployment.environment, DeploymentStep.kind)
        .join(Deployment, DeploymentStep.deployment_id == Deployment.id)
        .where(
            Deployment.app_id == app_id,
            DeploymentStep.migration_hash == digest,
            DeploymentStep.state == "succeeded",
        )
        .distinct()
    ).all()
    phases = {kind: phase for phase, kind in STEP_KIND.items()}
    return {(env, phases[kind]) for env, kind in rows if kind in phases}
