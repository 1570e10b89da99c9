"""secrets per environment, sealed at rest, or from a command; resolved command output;
the environment of each host's app

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00

The secrets table is built again (its unique key gains the environment). Existing
values are copied as they are with `sealed` false: the migration has no key, so the
server seals them with its key file right after migrating, at the same start
(conveyor.store.secrets.open_store).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secrets_new",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False, server_default=""),
        sa.Column("kind", sa.String(length=20), nullable=False, server_default="value"),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "name", "environment"),
    )
    op.execute(
        "INSERT INTO secrets_new (id, app_id, name, environment, kind, value, sealed, updated_at) "
        "SELECT id, app_id, name, '', 'value', value, false, updated_at FROM secrets"
    )
    op.drop_table("secrets")
    op.rename_table("secrets_new", "secrets")
    op.create_table(
        "resolved_secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "environment", "name"),
    )
    with op.batch_alter_table("host_apps") as batch:
        batch.add_column(sa.Column("environment", sa.String(length=100), nullable=True))


def downgrade() -> None:
    # sealed values cannot go back to plain text without the key: refused
    raise RuntimeError("0008 cannot be undone: secrets are sealed with the server's key file")
