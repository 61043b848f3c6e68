"""feedback: engagement events, pull watermarks and suppressions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "engagement_events",
        sa.Column("id", _id(), nullable=False),
        sa.Column("esp", sa.String(length=16), nullable=False),
        sa.Column("esp_event_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("send_id", _id(), nullable=True),
        sa.Column("customer_id", _id(), nullable=True),
        sa.Column("linked_by", sa.String(length=16), nullable=True),
        sa.Column("esp_profile_id", sa.String(length=255), nullable=True),
        sa.Column(
            "machine_open", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["send_id"],
            ["sends.id"],
            name=op.f("fk_engagement_events_send_id_sends"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_engagement_events_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagement_events")),
        sa.UniqueConstraint(
            "esp", "esp_event_id", name=op.f("uq_engagement_events_esp")
        ),
    )
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_engagement_events_send_id"), ["send_id"], unique=False
        )
        batch_op.create_index(
            "ix_engagement_events_customer_time",
            ["customer_id", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_engagement_events_kind_time", ["kind", "occurred_at"], unique=False
        )
        batch_op.create_index(
            "ix_engagement_events_profile", ["esp", "esp_profile_id"], unique=False
        )

    op.create_table(
        "feedback_watermarks",
        sa.Column("id", _id(), nullable=False),
        sa.Column("esp", sa.String(length=16), nullable=False),
        sa.Column("stream", sa.String(length=128), nullable=False),
        sa.Column("watermark", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_watermarks")),
        sa.UniqueConstraint("esp", "stream", name=op.f("uq_feedback_watermarks_esp")),
    )

    op.create_table(
        "suppressions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("customer_id", _id(), nullable=False),
        sa.Column("event_id", _id(), nullable=False),
        sa.Column("esp", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("suppressed_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_suppressions_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["engagement_events.id"],
            name=op.f("fk_suppressions_event_id_engagement_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("event_id", name=op.f("uq_suppressions_event_id")),
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_suppressions_customer_id"), ["customer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suppressions_customer_id"))
    op.drop_table("suppressions")
    op.drop_table("feedback_watermarks")
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.drop_index("ix_engagement_events_profile")
        batch_op.drop_index("ix_engagement_events_kind_time")
        batch_op.drop_index("ix_engagement_events_customer_time")
        batch_op.drop_index(batch_op.f("ix_engagement_events_send_id"))
    op.drop_table("engagement_events")
