"""Database tables of the leaderboard (SQLAlchemy Core).

Every submission is stored whole: the original ``results.json`` text verbatim in
``submissions.results_json``, plus the columns the tables and filters need, plus one row
per (task, metric) in ``metric_values`` for sorting in SQL. All rows of one submission are
written in a single transaction. Schema changes go through Alembic migrations
(``leaderboard/migrations``); a test checks that these tables match the migrations.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s",
})

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    # SHA-256 of the token: tokens are 256-bit random strings, so a plain hash cannot be
    # brute-forced and allows an indexed lookup. The token itself is never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("token_id", Integer, ForeignKey("api_tokens.id"), nullable=False),
    Column("status", String(16), nullable=False),  # "verified" | "unverified"
    Column("status_reasons", Text, nullable=False),  # JSON list of {"field", "reason"}
    Column("tokenizer_name", String(500), nullable=False),
    Column("family", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("checkpoint_sha256", String(64), nullable=True),
    Column("parameters", BigInteger, nullable=False),
    Column("tokens_per_image", Float, nullable=True),
    Column("bits_per_image", Float, nullable=True),
    Column("tokbench_version", String(64), nullable=False),
    # SHA-256 over (checkpoint identity, datasets, tokbench version): the duplicate check.
    Column("duplicate_key", String(64), nullable=False, unique=True),
    Column("results_sha256", String(64), nullable=False),
    Column("results_json", Text, nullable=False),
    # The protocol preset's name (results' top-level "protocol"); NULL: none (revision 0002).
    Column("protocol", Text, nullable=True),
    Index("ix_submissions_family", "family"),
    Index("ix_submissions_status", "status"),
)

metric_values = Table(
    "metric_values", metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_id", Integer, ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(100), nullable=False),
    Column("metric", String(100), nullable=False),
    Column("mean", Float, nullable=False),
    Column("ci_low", Float, nullable=False),
    Column("ci_high", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("higher_is_better", Boolean, nullable=False),
    UniqueConstraint("submission_id", "task", "metric", name="uq_metric_values_entry_task_metric"),
    Index("ix_metric_values_task_metric", "task", "metric"),
)

# Each task's setting (`tokbench.comparability.Setting`): scores are ranked only among
# entries of the same suite, protocol and resolution. Revision 0002.
task_settings = Table(
    "task_settings", metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_id", Integer, ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(100), nullable=False),
    Column("suite", Text, nullable=False),
    Column("resolution", String(64), nullable=True),
    Column("recognizer", Text, nullable=True),  # the text task's OCR engine, where recorded
    UniqueConstraint("submission_id", "task", name="uq_task_settings_entry_task"),
)
