"""Version 2: each entry's protocol and each task's setting (suite, resolution, recognizer),
so that the leaderboard ranks only within one suite, protocol and resolution.

Existing entries are filled in from their stored results files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""
import json

import sqlalchemy as sa
from alembic import op

from tokbench.comparability import protocol_name, recognizer, task_settings

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("protocol", sa.Text, nullable=True))
    settings = op.create_table(
        "task_settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submission_id", sa.Integer, nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("suite", sa.Text, nullable=False),
        sa.Column("resolution", sa.String(64), nullable=True),
        sa.Column("recognizer", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_task_settings"),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE",
                                name="fk_task_settings_submission_id_submissions"),
        sa.UniqueConstraint("submission_id", "task", name="uq_task_settings_entry_task"),
    )
    conn = op.get_bind()
    submissions = sa.table("submissions", sa.column("id", sa.Integer), sa.column("results_json", sa.Text),
                           sa.column("protocol", sa.Text))
    for entry_id, text in conn.execute(sa.select(submissions.c.id, submissions.c.results_json)).all():
        results = json.loads(text)
        conn.execute(sa.update(submissions).where(submissions.c.id == entry_id)
                     .values(protocol=protocol_name(results)))
        rows = [dict(submission_id=entry_id, task=task, suite=s.suite, resolution=s.resolution,
                     recognizer=recognizer(results["tasks"][task]))
                for task, s in task_settings(results).items()]
        if rows:
            conn.execute(sa.insert(settings), rows)


def downgrade() -> None:
    op.drop_table("task_settings")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("protocol")
