"""Alert rules: an absolute floor for surges and spikes (min_observed)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alert_rules", sa.Column("min_observed", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("alert_rules", "min_observed")
