"""Transcripts of audio and video posts (speech recognition), searchable by words

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("post_id", sa.String(length=300), nullable=False),
        sa.Column("media_idx", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=60), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("language_probability", sa.Float(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("segments", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("audio_s", sa.Float(), nullable=True),
        sa.Column("speech_s", sa.Float(), nullable=True),
        sa.Column("asr_ms", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id"),
    )
    # word search over what was said, like the API's search over post text
    op.create_index(
        "ix_transcripts_words", "transcripts", [sa.text("to_tsvector('simple', text)")], postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index("ix_transcripts_words", table_name="transcripts")
    op.drop_table("transcripts")
