"""pull-request runs, the commit statuses posted to forges, each app's forge API URL, and
the infrastructure checks each host's agent should run

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-06 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("forge_api", sa.Text(), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("checks", sa.Text(), nullable=True))
    op.create_table(
        "pull_request_runs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("forge", sa.String(length=20), nullable=False),
        sa.Column("project", sa.String(length=255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("head_sha", sa.String(length=64), nullable=False),
        sa.Column("head_ref", sa.String(length=255), nullable=False),
        sa.Column("merge_ref", sa.String(length=255), nullable=True),
        sa.Column("tested_sha", sa.String(length=64), nullable=True),
        sa.Column("reported", sa.String(length=20), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_pull_request_runs_done", "pull_request_runs", ["done"])
    op.create_table(
        "commit_statuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("target_url", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_commit_statuses_run_id", "commit_statuses", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_commit_statuses_run_id", table_name="commit_statuses")
    op.drop_table("commit_statuses")
    op.drop_index("ix_pull_request_runs_done", table_name="pull_request_runs")
    op.drop_table("pull_request_runs")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("checks")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("forge_api")
