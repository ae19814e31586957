"""Version 1 of the leaderboard database: API tokens, submissions, metric values.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reasons", sa.Text, nullable=False),
        sa.Column("tokenizer_name", sa.String(500), nullable=False),
        sa.Column("family", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("parameters", sa.BigInteger, nullable=False),
        sa.Column("tokens_per_image", sa.Float, nullable=True),
        sa.Column("bits_per_image", sa.Float, nullable=True),
        sa.Column("tokbench_version", sa.String(64), nullable=False),
        sa.Column("duplicate_key", sa.String(64), nullable=False),
        sa.Column("results_sha256", sa.String(64), nullable=False),
        sa.Column("results_json", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_submissions"),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], name="fk_submissions_token_id_api_tokens"),
        sa.UniqueConstraint("duplicate_key", name="uq_submissions_duplicate_key"),
    )
    op.create_index("ix_submissions_family", "submissions", ["family"])
    op.create_index("ix_submissions_status", "submissions", ["status"])
    op.create_table(
        "metric_values",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submission_id", sa.Integer, nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("ci_low", sa.Float, nullable=False),
        sa.Column("ci_high", sa.Float, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("higher_is_better", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_values"),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE",
                                name="fk_metric_values_submission_id_submissions"),
        sa.UniqueConstraint("submission_id", "task", "metric", name="uq_metric_values_entry_task_metric"),
    )
    op.create_index("ix_metric_values_task_metric", "metric_values", ["task", "metric"])


def downgrade() -> None:
    op.drop_table("metric_values")
    op.drop_table("submissions")
    op.drop_table("api_tokens")
