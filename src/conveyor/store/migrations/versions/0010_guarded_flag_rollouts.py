"""guarded flag rollouts (steps, pause, the judge's state, how they ended) and a note on
a flag's change (the evidence of a rollout the judge stopped)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flag_rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flag_id", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("step_pause", sa.Double(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("judge", sa.Text(), nullable=True),
        sa.Column("judgement", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["flag_id"], ["flags.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_flag_rollouts_flag_id", "flag_rollouts", ["flag_id"])
    op.create_index("ix_flag_rollouts_state", "flag_rollouts", ["state"])
    with op.batch_alter_table("flag_changes") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flag_changes") as batch:
        batch.drop_column("note")
    op.drop_index("ix_flag_rollouts_state", table_name="flag_rollouts")
    op.drop_index("ix_flag_rollouts_flag_id", table_name="flag_rollouts")
    op.drop_table("flag_rollouts")
