"""the content hash of a release's migrations, and of the migration each migrate or
contract step ran: a production migration runs only after the same one succeeded before

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: no migrations, or built (run) before this server recorded them
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("migration_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("deployment_steps") as batch:
        batch.add_column(sa.Column("migration_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment_steps") as batch:
        batch.drop_column("migration_hash")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("migration_hash")
