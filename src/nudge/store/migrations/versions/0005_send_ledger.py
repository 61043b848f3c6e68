"""send ledger: one row per (campaign, customer, occurrence), and plan occurrences

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("plan_decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("occurrence", sa.String(length=32), nullable=True)
        )

    op.create_table(
        "sends",
        sa.Column("id", _id(), nullable=False),
        sa.Column("send_key", sa.String(length=40), nullable=False),
        sa.Column("plan_run_id", _id(), nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("customer_id", _id(), nullable=False),
        sa.Column("occurrence", sa.String(length=32), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("approval_required", sa.Boolean(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("esp", sa.String(length=16), nullable=False),
        sa.Column("esp_id", sa.String(length=255), nullable=True),
        sa.Column("esp_job_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_run_id"],
            ["plan_runs.id"],
            name=op.f("fk_sends_plan_run_id_plan_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_sends_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sends")),
        sa.UniqueConstraint(
            "campaign",
            "customer_id",
            "occurrence",
            name=op.f("uq_sends_campaign"),
        ),
        sa.UniqueConstraint("send_key", name=op.f("uq_sends_send_key")),
    )
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sends_plan_run_id"), ["plan_run_id"], unique=False
        )
        batch_op.create_index("ix_sends_status_due", ["status", "due_at"], unique=False)
        batch_op.create_index(
            "ix_sends_customer", ["customer_id", "due_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_customer")
        batch_op.drop_index("ix_sends_status_due")
        batch_op.drop_index(batch_op.f("ix_sends_plan_run_id"))
    op.drop_table("sends")

    with op.batch_alter_table("plan_decisions", schema=None) as batch_op:
        batch_op.drop_column("occurrence")
