"""one queued and one acting deployment per environment, held by the database;
answers kept for requests sent with an Idempotency-Key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 21:00:00

Older servers could leave several queued (or, in a race, acting) deployments for
one environment. Before the unique indexes are built, the newest of each group
stays and the others end, each with a reason naming the one that stayed.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# as in conveyor.store.models when this revision was written
PENDING = ("queued", "waiting")
ACTING = ("running", "rolling_back", "aborting")


def _where(states: tuple[str, ...]) -> sa.TextClause:
    return sa.text("state IN ({})".format(", ".join(f"'{s}'" for s in states)))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _end_duplicates(conn: sa.Connection) -> None:
    deployments = sa.table(
        "deployments",
        sa.column("id", sa.Integer),
        sa.column("app_id", sa.Integer),
        sa.column("environment", sa.String),
        sa.column("state", sa.String),
        sa.column("reason", sa.Text),
        sa.column("finished_at", sa.DateTime),
    )
    steps = sa.table(
        "deployment_steps",
        sa.column("deployment_id", sa.Integer),
        sa.column("state", sa.String),
        sa.column("reason", sa.Text),
        sa.column("finished_at", sa.DateTime),
    )
    for group, final in ((PENDING, "superseded"), (ACTING, "failed")):
        rows = conn.execute(
            sa.select(deployments.c.id, deployments.c.app_id, deployments.c.environment)
            .where(deployments.c.state.in_(group))
            .order_by(deployments.c.id)
        ).all()
        by_env: dict[tuple[int, str], list[int]] = defaultdict(list)
        for row in rows:
            by_env[(row.app_id, row.environment)].append(row.id)
        for ids in by_env.values():
            kept, older = ids[-1], ids[:-1]
            if not older:
                continue
            reason = (
                f"superseded by deployment #{kept}: one deployment queued per environment"
                if final == "superseded"
                else f"ended on upgrade: deployment #{kept} acted on the same environment "
                "at the same time; check what its hosts run"
            )
            now = _now()
            conn.execute(
                deployments.update()
                .where(deployments.c.id.in_(older))
                .values(state=final, reason=reason, finished_at=now)
            )
            conn.execute(
                steps.update()
                .where(steps.c.deployment_id.in_(older), steps.c.state == "running")
                .values(state="cancelled", reason=reason, finished_at=now)
            )
            conn.execute(
                steps.update()
                .where(steps.c.deployment_id.in_(older), steps.c.state == "pending")
                .values(state="skipped")
            )


def upgrade() -> None:
    _end_duplicates(op.get_bind())
    op.create_index(
        "uq_deployments_one_pending",
        "deployments",
        ["app_id", "environment"],
        unique=True,
        sqlite_where=_where(PENDING),
        postgresql_where=_where(PENDING),
    )
    op.create_index(
        "uq_deployments_one_acting",
        "deployments",
        ["app_id", "environment"],
        unique=True,
        sqlite_where=_where(ACTING),
        postgresql_where=_where(ACTING),
    )
    op.create_table(
        "idempotent_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_id", "scope"),
    )
    op.create_index(
        "ix_idempotent_requests_created_at", "idempotent_requests", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_idempotent_requests_created_at", table_name="idempotent_requests")
    op.drop_table("idempotent_requests")
    op.drop_index("uq_deployments_one_acting", table_name="deployments")
    op.drop_index("uq_deployments_one_pending", table_name="deployments")
