"""Trends that scale out and reads from aggregates: per-partition window parts (no global lock),
each partition's own closed-through point and an index for partition-scoped closes

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trend_window_parts",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("watch_id", sa.Integer(), nullable=False),
        sa.Column("size", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_posts", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("n_neutral", sa.Integer(), nullable=False),
        sa.Column("n_positive", sa.Integer(), nullable=False),
        sa.Column("sum_score", sa.Float(), nullable=False),
        sa.Column("unique_authors", sa.Integer(), nullable=False),
        sa.Column("top_negative", postgresql.ARRAY(sa.String(length=300)), nullable=False),
        sa.Column("top_negative_scores", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column("top_positive", postgresql.ARRAY(sa.String(length=300)), nullable=False),
        sa.Column("top_positive_scores", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.PrimaryKeyConstraint("source", "watch_id", "size", "window_start", "partition"),
    )
    op.create_index("ix_trend_window_parts_end", "trend_window_parts", ["source", "window_end"], unique=False)
    op.add_column("trend_watermarks", sa.Column("closed_through", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_trend_members_partition_created", "trend_members", ["source_partition", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_trend_members_partition_created", table_name="trend_members")
    op.drop_column("trend_watermarks", "closed_through")
    op.drop_index("ix_trend_window_parts_end", table_name="trend_window_parts")
    op.drop_table("trend_window_parts")
