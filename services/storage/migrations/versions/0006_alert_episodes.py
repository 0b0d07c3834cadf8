"""Alert episodes on event time: robust/count-model baselines, hysteresis, escalation, the why

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add = op.add_column
    add("alert_rules", sa.Column("model", sa.String(12), nullable=False, server_default="gaussian"))
    add("alert_rules", sa.Column("exclude_fired", sa.Boolean(), nullable=False, server_default=sa.true()))
    add("alert_rules", sa.Column("seasonality", sa.String(12), nullable=False, server_default="none"))
    add("alert_rules", sa.Column("resolve_after", sa.Integer(), nullable=False, server_default="1"))
    add("alert_rules", sa.Column("resolve_ratio", sa.Float(), nullable=False, server_default="1.0"))
    add("alert_rule_state", sa.Column("last_warm_end", sa.DateTime(timezone=True), nullable=True))
    add("alert_rule_state", sa.Column("episode_start", sa.DateTime(timezone=True), nullable=True))
    add("alert_rule_state", sa.Column("severity", sa.String(16), nullable=True))
    add("alert_firings", sa.Column("episode_start", sa.DateTime(timezone=True), nullable=True))
    add("alert_firings", sa.Column("reason", sa.Text(), nullable=True))
    add("alert_firings", sa.Column("escalated", sa.Boolean(), nullable=False, server_default=sa.false()))
    add("alert_firings", sa.Column("why", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    add("alert_groups", sa.Column("severity", sa.String(16), nullable=True))
    add("alert_groups", sa.Column("silenced_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "alert_episode_windows",
        sa.Column("rule_id", sa.Integer(), sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("watch_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "watch_id", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("alert_episode_windows")
    for table, col in (
        ("alert_groups", "silenced_until"),
        ("alert_groups", "severity"),
        ("alert_firings", "why"),
        ("alert_firings", "escalated"),
        ("alert_firings", "reason"),
        ("alert_firings", "episode_start"),
        ("alert_rule_state", "severity"),
        ("alert_rule_state", "episode_start"),
        ("alert_rule_state", "last_warm_end"),
        ("alert_rules", "resolve_ratio"),
        ("alert_rules", "resolve_after"),
        ("alert_rules", "seasonality"),
        ("alert_rules", "exclude_fired"),
        ("alert_rules", "model"),
    ):
        op.drop_column(table, col)
