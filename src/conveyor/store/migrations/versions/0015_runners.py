"""runners: runs handed to `conveyor runner` processes, and the runners seen

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00

A run handed off keeps its plan in runs.handoff; runs.runner and runs.runner_expires_at
say which runner claimed it and until when its heartbeat holds it (pipeline/handoff.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("handoff", sa.Text(), nullable=True))
        batch.add_column(sa.Column("runner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("runner_expires_at", sa.DateTime(), nullable=True))
    op.create_table(
        "runners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("runners")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("runner_expires_at")
        batch.drop_column("runner")
        batch.drop_column("handoff")
