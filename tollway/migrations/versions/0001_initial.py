"""The schema of the first releases, which created their tables with ``create_all``:
organizations, API tokens, workflows and their versions, orders, payments, payment events and
the local provider's charges.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: A database that has this table but no ``alembic_version`` was made by such a release.
MARKER_TABLE = "organization"


def upgrade() -> None:
    op.create_table(
        "local_charge",
        sa.Column("payment_reference", sa.String(255), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=True),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refund_id", sa.String(255), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("payment_reference"),
    )
    op.create_index(
        op.f("ix_local_charge_execution_id"), "local_charge", ["execution_id"], unique=False
    )
    op.create_table(
        "order",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("workflow_name", sa.String(200), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=True),
        sa.Column("checkout_url", sa.String(2000), nullable=True),
        sa.Column("payment_reference", sa.String(255), nullable=True),
        sa.Column("refund_reference", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_order_checkout_session_id"), "order", ["checkout_session_id"], unique=False
    )
    op.create_index(op.f("ix_order_execution_id"), "order", ["execution_id"], unique=True)
    op.create_index(op.f("ix_order_organization_id"), "order", ["organization_id"], unique=False)
    op.create_index(op.f("ix_order_workflow_id"), "order", ["workflow_id"], unique=False)
    op.create_table(
        "organization",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_organization_name"), "organization", ["name"], unique=False)
    op.create_table(
        "payment",
        sa.Column("payment_reference", sa.String(255), nullable=False),
        sa.Column("order_id", sa.String(40), nullable=True),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refund_reference", sa.String(255), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refund_reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("payment_reference"),
    )
    op.create_index(op.f("ix_payment_execution_id"), "payment", ["execution_id"], unique=False)
    op.create_index(op.f("ix_payment_order_id"), "payment", ["order_id"], unique=False)
    op.create_table(
        "payment_event",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_payment_event_execution_id"), "payment_event", ["execution_id"], unique=False
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("organization_id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("rate_limit", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_api_token_organization_id"), "api_token", ["organization_id"], unique=False
    )
    op.create_index(op.f("ix_api_token_token_hash"), "api_token", ["token_hash"], unique=True)
    op.create_table(
        "public_workflow",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("organization_id", sa.String(40), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_public_workflow_organization_id"),
        "public_workflow",
        ["organization_id"],
        unique=False,
    )
    op.create_table(
        "workflow_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["public_workflow.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "version"),
    )
    op.create_index(
        op.f("ix_workflow_version_workflow_id"), "workflow_version", ["workflow_id"], unique=False
    )


def downgrade() -> None:
    for table in (
        "workflow_version",
        "public_workflow",
        "api_token",
        "payment_event",
        "payment",
        "organization",
        "order",
        "local_charge",
    ):
        op.drop_table(table)
