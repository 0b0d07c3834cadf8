"""Ingest ledger, durable per-author state, consumer group epochs

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_ledger",
        sa.Column("post_id", sa.String(length=300), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("republished", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("post_id"),
    )
    op.create_index("ix_ingest_ledger_accepted_at", "ingest_ledger", ["accepted_at"])
    op.create_table(
        "author_states",
        sa.Column("author_id", sa.String(length=300), nullable=False),
        sa.Column("view", sa.String(length=20), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("mean", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("author_id", "view"),
    )
    op.create_table(
        "consumer_group_epochs",
        sa.Column("base_group", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("base_group"),
    )


def downgrade() -> None:
    op.drop_table("consumer_group_epochs")
    op.drop_table("author_states")
    op.drop_index("ix_ingest_ledger_accepted_at", table_name="ingest_ledger")
    op.drop_table("ingest_ledger")
