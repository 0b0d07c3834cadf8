"""Live snapshots kept incrementally: each partition's running aggregate of the newest open window
per watch and window size, updated in the batch transaction (no scan of the open window's members)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trend_live_parts",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("watch_id", sa.Integer(), nullable=False),
        sa.Column("size", sa.String(length=16), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_posts", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("n_neutral", sa.Integer(), nullable=False),
        sa.Column("n_positive", sa.Integer(), nullable=False),
        sa.Column("sum_score", sa.Float(), nullable=False),
        sa.Column("top_negative", postgresql.ARRAY(sa.String(length=300)), nullable=False),
        sa.Column("top_negative_scores", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column("top_positive", postgresql.ARRAY(sa.String(length=300)), nullable=False),
        sa.Column("top_positive_scores", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.PrimaryKeyConstraint("source", "watch_id", "size", "partition"),
    )


def downgrade() -> None:
    op.drop_table("trend_live_parts")
