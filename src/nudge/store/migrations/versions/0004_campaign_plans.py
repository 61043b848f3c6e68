"""campaign plans: plan runs and their per-customer decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plan_runs",
        sa.Column("id", _id(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("as_of", sa.DateTime(), nullable=False),
        sa.Column("campaigns", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("approved_by", sa.String(length=255), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_runs")),
    )
    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_runs_as_of"), ["as_of"], unique=False)

    op.create_table(
        "plan_decisions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("customer_id", _id(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("variant", sa.String(length=32), nullable=True),
        sa.Column("expected_value", sa.Float(), nullable=True),
        sa.Column("send_at", sa.DateTime(), nullable=True),
        sa.Column("items", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["plan_runs.id"],
            name=op.f("fk_plan_decisions_run_id_plan_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_plan_decisions_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_decisions")),
        sa.UniqueConstraint(
            "run_id",
            "campaign",
            "customer_id",
            name=op.f("uq_plan_decisions_run_id"),
        ),
    )
    with op.batch_alter_table("plan_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plan_decisions_run_id"), ["run_id"], unique=False
        )
        batch_op.create_index(
            "ix_plan_decisions_customer_send",
            ["customer_id", "send_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("plan_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_decisions_customer_send")
        batch_op.drop_index(batch_op.f("ix_plan_decisions_run_id"))
    op.drop_table("plan_decisions")

    with op.batch_alter_table("plan_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_runs_as_of"))
    op.drop_table("plan_runs")
