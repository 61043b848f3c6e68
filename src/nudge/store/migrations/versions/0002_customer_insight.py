"""customer insight: profiles and replenishment snapshots

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 14:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import nudge.store.insight_models  # noqa: F401

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customer_profiles",
        sa.Column("customer_id", _id(), autoincrement=False, nullable=False),
        sa.Column("as_of", sa.DateTime(), nullable=False),
        sa.Column("first_order_at", sa.DateTime(), nullable=False),
        sa.Column("last_order_at", sa.DateTime(), nullable=False),
        sa.Column("recency_days", sa.Integer(), nullable=False),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("monetary", sa.Float(), nullable=False),
        sa.Column("avg_order_value", sa.Float(), nullable=False),
        sa.Column("tenure_days", sa.Integer(), nullable=False),
        sa.Column("r_score", sa.SmallInteger(), nullable=False),
        sa.Column("f_score", sa.SmallInteger(), nullable=False),
        sa.Column("m_score", sa.SmallInteger(), nullable=False),
        sa.Column("segment", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("stage_rule", sa.String(length=255), nullable=False),
        sa.Column("model_used", sa.String(length=16), nullable=False),
        sa.Column("p_alive", sa.Float(), nullable=False),
        sa.Column("churn_risk", sa.Float(), nullable=False),
        sa.Column("churn_band", sa.String(length=8), nullable=False),
        sa.Column("clv", sa.Float(), nullable=False),
        sa.Column("expected_next_order_at", sa.DateTime(), nullable=True),
        sa.Column("typical_gap_days", sa.Float(), nullable=False),
        sa.Column("affinities", sa.JSON(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_profiles_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint(
            "customer_id", "as_of", name=op.f("pk_customer_profiles")
        ),
    )
    with op.batch_alter_table("customer_profiles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_profiles_as_of"), ["as_of"], unique=False
        )

    op.create_table(
        "product_replenishment",
        sa.Column("product_id", _id(), autoincrement=False, nullable=False),
        sa.Column("as_of", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=True),
        sa.Column("median_gap_days", sa.Float(), nullable=False),
        sa.Column("gap_p25_days", sa.Float(), nullable=False),
        sa.Column("gap_p75_days", sa.Float(), nullable=False),
        sa.Column("repeat_gaps", sa.Integer(), nullable=False),
        sa.Column("repeat_customers", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_product_replenishment_product_id_products"),
        ),
        sa.PrimaryKeyConstraint(
            "product_id", "as_of", name=op.f("pk_product_replenishment")
        ),
    )
    with op.batch_alter_table("product_replenishment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_product_replenishment_as_of"), ["as_of"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("product_replenishment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_product_replenishment_as_of"))

    op.drop_table("product_replenishment")
    with op.batch_alter_table("customer_profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_profiles_as_of"))

    op.drop_table("customer_profiles")
