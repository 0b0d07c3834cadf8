"""Complaint reasons of negative posts (the reason head, run by the scorer) on their prediction

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("reason", sa.String(40), nullable=True))
    op.add_column("predictions", sa.Column("reason_probability", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("predictions", "reason_probability")
    op.drop_column("predictions", "reason")
