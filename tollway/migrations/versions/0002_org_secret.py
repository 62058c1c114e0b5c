"""Organizations' step secrets, bound to hosts and encrypted at rest.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: A database that has this table but no ``alembic_version`` was made by ``create_all`` at
#: this revision.
MARKER_TABLE = "org_secret"


def upgrade() -> None:
    op.create_table(
        "org_secret",
        sa.Column("organization_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ciphertext", sa.String(20_000), nullable=False),
        sa.Column("allow_hosts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organization.id"]),
        sa.PrimaryKeyConstraint("organization_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("org_secret")
